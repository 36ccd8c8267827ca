/**
 * Which live socket of a room speaks for which Yjs client id. Invariant: new structs of a
 * client id are taken only from the socket that first sent structs for it, while that socket is
 * connected — so no socket can write into another live client's clock range. (Yjs keeps
 * whichever content of an id arrives first and ignores the other: a forged id would make the
 * server's document and its real author's diverge for good.) Ids of clients that left, and of
 * peer edges' clients, are free; a forger on another edge is core's data-quality check to catch.
 */
export class ClientOwners<S> {
  private readonly owners = new Map<number, S>()

  /** The client ids with new structs in `update`; null when another live socket owns one of them. */
  check(socket: S, clientIds: Iterable<number>): number[] | null {
    const ids = [...clientIds]
    for (const id of ids) {
      const owner = this.owners.get(id)
      if (owner !== undefined && owner !== socket) return null
    }
    return ids
  }

  /** The socket's update was taken: it owns the ids nobody owned. */
  claim(socket: S, ids: number[]): void {
    for (const id of ids) if (!this.owners.has(id)) this.owners.set(id, socket)
  }

  release(socket: S): void {
    for (const [id, owner] of this.owners) if (owner === socket) this.owners.delete(id)
  }
}
