import * as Y from 'yjs'
import type { ClientUsers } from '../contracts/mod.ts'
import { writtenRanges } from '../runtime/yjs-items.ts'
import { claimUnowned, foreignClientOf, type ClientUsers as UserMap } from '../runtime/client-users.ts'
import type { StoredDoc } from './store.ts'

/**
 * Which user first wrote with each Yjs client id of a document, in stream order. Invariant: a
 * client id, once claimed, belongs to its user for good — no other user's update writes clocks
 * under it (batch.ts refuses one as foreign-client). Without that, a co-editor could write
 * under an offline author's next clocks, and Yjs, which keeps whichever content of an id comes
 * first, would drop the author's offline edits wherever the forgery came first.
 *
 * One rule everywhere (live in batch.ts, in a rebuild, and on a load from the store): an update
 * writes under the clients of which it carries clocks the document holds neither integrated nor
 * pending when it comes (writtenClients) — its own new structs, applied or left pending; not
 * the structs of others it resends (a reconnecting client's sync step 2 carries pending ones
 * too), nor pending structs of others it releases, nor a Skip.
 */
export type ClientOwners = UserMap

/** Whether a document held clocks [start, end) of `client`: integrated (below `state`) or pending. */
export type Held = (client: number, start: number, end: number) => boolean

/** What `doc` holds now; or, given `before`, what it held before an apply: those clocks and those pending structs (null: none). */
export function heldIn(doc: Y.Doc, before?: { state: (client: number) => number; pending: Uint8Array | null }): Held {
  const state = before?.state ?? ((client: number) => Y.getState(doc.store, client))
  const pending = before ? before.pending : (doc.store.pendingStructs?.update ?? null)
  // Yjs keeps pending structs as a V2 update.
  const waiting = pending ? writtenRanges(Y.decodeUpdateV2(pending).structs) : null
  return (client, start, end) => end <= state(client) || (waiting?.get(client)?.some(([s, e]) => s <= start && end <= e) ?? false)
}

/** The clients of whose clocks `update` carries some that `held` says the document did not hold. */
export function writtenClients(update: Uint8Array, held: Held): number[] {
  const written: number[] = []
  for (const [client, ranges] of writtenRanges(Y.decodeUpdate(update).structs)) if (ranges.some(([start, end]) => !held(client, start, end))) written.push(client)
  return written
}

/**
 * Applies a stored document's state and op-log tail to `doc` and returns its owners: those
 * stored with the state (docs.client_users) plus the writers of the tail rows, each judged
 * against the document as it was before it, as core judged it live.
 */
export function applyStored(doc: Y.Doc, { state, stateOwners, tail, tailUsers }: StoredDoc): ClientOwners {
  const owners: ClientOwners = new Map(Object.entries(stateOwners ?? {}).map(([client, user]) => [Number(client), user]))
  if (state) Y.applyUpdate(doc, state)
  tail.forEach((update, i) => {
    claimUnowned(owners, writtenClients(update, heldIn(doc)), tailUsers[i]!)
    Y.applyUpdate(doc, update)
  })
  return owners
}

/** The owners of a stored document, read without keeping it (applyStored on a doc of its own). */
export function storedOwners(parts: StoredDoc): ClientOwners {
  const doc = new Y.Doc()
  try {
    return applyStored(doc, parts)
  } finally {
    doc.destroy()
  }
}

/** Why `userId` may not write under `clients` (another user owns one of them), or null. */
export function foreignClient(owners: ClientOwners, clients: readonly number[], userId: string): string | null {
  const client = foreignClientOf(owners, clients, userId)
  return client === null ? null : `client ${client} belongs to another user`
}

/** As stored in docs.client_users. */
export const ownersJson = (owners: ClientOwners): string => JSON.stringify(Object.fromEntries(owners))

/** As a state reply carries them. */
export const ownerPairs = (owners: ClientOwners): ClientUsers => [...owners]
