import * as Y from 'yjs'
import type { ClientUsers } from '../contracts/mod.ts'
import type { UpdateMeta } from '../runtime/yjs-items.ts'

/**
 * Which user first wrote with each Yjs client id of a document, in stream order. Invariant: a
 * client id, once claimed, belongs to its user for good — no other user's update adds structs
 * under it (batch.ts refuses one as foreign-client). Without that, a co-editor could write
 * under an offline author's next clocks, and Yjs, which keeps whichever content of an id comes
 * first, would drop the author's offline edits wherever the forgery came first.
 */
export type ClientOwners = Map<number, string>

/** The owners stored with a state (docs.client_users) plus the first writers of the tail after it, in order. */
export function storedOwners(stateOwners: Record<string, string> | null, tail: readonly Uint8Array[], tailUsers: readonly string[]): ClientOwners {
  const owners: ClientOwners = new Map(Object.entries(stateOwners ?? {}).map(([client, user]) => [Number(client), user]))
  tail.forEach((update, i) => claim(owners, Y.parseUpdateMeta(update).from.keys(), tailUsers[i]!))
  return owners
}

/** Why `userId` may not add the clocks `integrated` names (another user owns one of their clients), or null. */
export function foreignClient(owners: ClientOwners, integrated: UpdateMeta, userId: string): string | null {
  for (const client of integrated.to.keys()) {
    const owner = owners.get(client)
    if (owner !== undefined && owner !== userId) return `client ${client} belongs to another user`
  }
  return null
}

/** `userId` owns every client among `clients` nobody owned. */
export function claim(owners: ClientOwners, clients: Iterable<number>, userId: string): void {
  for (const client of clients) if (!owners.has(client)) owners.set(client, userId)
}

/** As stored in docs.client_users. */
export const ownersJson = (owners: ClientOwners): string => JSON.stringify(Object.fromEntries(owners))

/** As a state reply carries them. */
export const ownerPairs = (owners: ClientOwners): ClientUsers => [...owners]
