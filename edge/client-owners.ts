import { claimUnowned, foreignClientOf, type ClientUsers } from '../runtime/client-users.ts'

/**
 * Which socket, and which user, speaks for which Yjs client id in a room. Invariants: new
 * structs of a client id are taken only from the socket that first sent structs for it while
 * that socket is connected, and only from sockets of the user that first wrote with it — so no
 * socket can write into another live client's clock range, and no user can write into the
 * clocks another user's client has not sent yet (its offline edits). Yjs keeps whichever
 * content of an id arrives first and ignores the other: a forged id would make the server's
 * document and its real author's diverge for good. Users are learnt from this room's writers,
 * from core's state replies (every committed update's writer: core/client-users.ts, where core
 * refuses what slips past an edge), from peer rooms' replies and from their fanned-out updates.
 */
export class ClientOwners<S extends { readonly userId: string }> {
  private readonly sockets = new Map<number, S>()
  private readonly users: ClientUsers = new Map()

  /** The client ids with new structs in `update`; null when another live socket or another user owns one of them. */
  check(socket: S, clientIds: Iterable<number>): number[] | null {
    const ids = [...clientIds]
    for (const id of ids) {
      const owner = this.sockets.get(id)
      if (owner !== undefined && owner !== socket) return null
    }
    return foreignClientOf(this.users, ids, socket.userId) === null ? ids : null
  }

  /** The socket's update was taken: it owns the ids nobody owned, and its user owns them while the room is open. */
  claim(socket: S, ids: number[]): void {
    for (const id of ids) if (!this.sockets.has(id)) this.sockets.set(id, socket)
    claimUnowned(this.users, ids, socket.userId)
  }

  /**
   * Owners learnt from a state reply: core's (`authoritative`: its stream order decides who
   * wrote an id first, over a claim here that core will refuse), or a peer room's (fills unknown ids).
   */
  learn(owners: Iterable<readonly [number, string]>, authoritative: boolean): void {
    for (const [id, user] of owners) if (authoritative || !this.users.has(id)) this.users.set(id, user)
  }

  /** `userId` wrote under `clientIds` elsewhere (over HTTP, on a peer edge): it owns those nobody owned. */
  wroteElsewhere(userId: string, clientIds: Iterable<number>): void {
    claimUnowned(this.users, clientIds, userId)
  }

  /** Every id's user, to answer a peer room's state request with. */
  known(): [number, string][] {
    return [...this.users]
  }

  /** True when one of `clientIds` belongs to a user other than `userId` (an HTTP post, which has no socket). */
  foreignTo(userId: string, clientIds: Iterable<number>): boolean {
    return foreignClientOf(this.users, clientIds, userId) !== null
  }

  /** The socket left: its ids are free for its user's other sockets (a reload, another tab). */
  release(socket: S): void {
    for (const [id, owner] of this.sockets) if (owner === socket) this.sockets.delete(id)
  }
}
