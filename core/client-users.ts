import * as Y from 'yjs'
import type { ClientUsers } from '../contracts/mod.ts'
import type { StoredDoc } from './store.ts'

/**
 * Which user first wrote with each Yjs client id of a document, in stream order. Invariant: a
 * client id, once claimed, belongs to its user for good — no other user's update writes clocks
 * under it (batch.ts refuses one as foreign-client). Without that, a co-editor could write
 * under an offline author's next clocks, and Yjs, which keeps whichever content of an id comes
 * first, would drop the author's offline edits wherever the forgery came first.
 *
 * One rule everywhere (live in batch.ts, in a rebuild, and read back from the store): an update
 * writes under the clients whose clocks it carries past what the document held of them when it
 * came (writtenClients) — its own new structs, applied or left pending; not the structs of
 * others it resends, nor pending structs of others it releases.
 */
export type ClientOwners = Map<number, string>

/** The clients `ends` (one past the last clock of each client in an update) carries past `held(client)`. */
export function writtenClients(ends: Map<number, number>, held: (client: number) => number): number[] {
  const written: number[] = []
  for (const [client, end] of ends) if (end > held(client)) written.push(client)
  return written
}

/**
 * The owners stored with a document's state (docs.client_users, as of that state), plus the
 * writers of its op-log tail, in order. A pending tail row counts as held for the rows after it;
 * a client whose clocks only that makes look held was claimed by that row already, so the
 * claims are the ones made live.
 */
export function storedOwners({ state, stateVector, stateOwners, tail, tailUsers }: StoredDoc): ClientOwners {
  const owners: ClientOwners = new Map(Object.entries(stateOwners ?? {}).map(([client, user]) => [Number(client), user]))
  const vector = stateVector ?? (state && Y.encodeStateVectorFromUpdate(state))
  const held = vector ? Y.decodeStateVector(vector) : new Map<number, number>()
  tail.forEach((update, i) => {
    const { to } = Y.parseUpdateMeta(update)
    claim(owners, writtenClients(to, (client) => held.get(client) ?? 0), tailUsers[i]!)
    for (const [client, end] of to) held.set(client, Math.max(end, held.get(client) ?? 0))
  })
  return owners
}

/** Why `userId` may not write under `clients` (another user owns one of them), or null. */
export function foreignClient(owners: ClientOwners, clients: readonly number[], userId: string): string | null {
  for (const client of clients) {
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
