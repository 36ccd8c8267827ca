/**
 * The first-writer rule for Yjs client ids, shared by core (core/client-users.ts, the authority:
 * stream order) and edge rooms (edge/client-owners.ts, which refuse early what core would): a
 * client id belongs for good to the user who first wrote under it in a document.
 */

/** Yjs client id → the user who first wrote under it. */
export type ClientUsers = Map<number, string>

/** The first of `clients` that a user other than `userId` owns, or null. */
export function foreignClientOf(users: ClientUsers, clients: Iterable<number>, userId: string): number | null {
  for (const client of clients) {
    const owner = users.get(client)
    if (owner !== undefined && owner !== userId) return client
  }
  return null
}

/** `userId` owns every client among `clients` nobody owned. */
export function claimUnowned(users: ClientUsers, clients: Iterable<number>, userId: string): void {
  for (const client of clients) if (!users.has(client)) users.set(client, userId)
}
