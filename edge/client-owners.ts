/**
 * Which socket, and which user, speaks for which Yjs client id in a room. Invariants: new
 * structs of a client id are taken only from the socket that first sent structs for it while
 * that socket is connected, and for as long as the room is open only from sockets of that
 * socket's user — so no socket can write into another live client's clock range, and no user
 * can write into the clocks another user's client has not sent yet (its offline edits). Yjs
 * keeps whichever content of an id arrives first and ignores the other: a forged id would make
 * the server's document and its real author's diverge for good. Ids of peer edges' clients are
 * free, and so are all ids once the room closes; a forger there is core's data-quality check to catch.
 */
export class ClientOwners<S extends { readonly userId: string }> {
  private readonly sockets = new Map<number, S>()
  private readonly users = new Map<number, string>()

  /** The client ids with new structs in `update`; null when another live socket or another user owns one of them. */
  check(socket: S, clientIds: Iterable<number>): number[] | null {
    const ids = [...clientIds]
    for (const id of ids) {
      const owner = this.sockets.get(id)
      if (owner !== undefined && owner !== socket) return null
      const user = this.users.get(id)
      if (user !== undefined && user !== socket.userId) return null
    }
    return ids
  }

  /** The socket's update was taken: it owns the ids nobody owned, and its user owns them while the room is open. */
  claim(socket: S, ids: number[]): void {
    for (const id of ids) {
      if (!this.sockets.has(id)) this.sockets.set(id, socket)
      if (!this.users.has(id)) this.users.set(id, socket.userId)
    }
  }

  /** The socket left: its ids are free for its user's other sockets (a reload, another tab). */
  release(socket: S): void {
    for (const [id, owner] of this.sockets) if (owner === socket) this.sockets.delete(id)
  }
}
