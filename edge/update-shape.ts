import * as Y from 'yjs'

// What a Yjs update touches and needs, judged against a document without applying it: the edge
// judges a socket's update, and an HTTP one, against its room.

/** What a decoded update touches. */
export interface UpdateShape {
  /** Struct ranges per client: [clientId, firstClock, endClock). */
  structs: Map<number, [number, number]>
  /** Per client whose structs hold a Skip (Y.mergeUpdates of non-adjacent updates): one past the highest skipped clock. */
  skips: Map<number, number>
  /** Deleted ranges per client: [clock, length]. */
  deletes: Map<number, [number, number][]>
  /** Per client, one past the highest clock the update's structs refer to (origins and parents). */
  refs: Map<number, number>
}

/** What a decoded update touches: its struct ranges, what they refer to, its deletes. */
export function shapeOf(decoded: Pick<ReturnType<typeof Y.decodeUpdate>, 'structs' | 'ds'>): UpdateShape {
  const structs = new Map<number, [number, number]>()
  const skips = new Map<number, number>()
  for (const s of decoded.structs) {
    const range = structs.get(s.id.client)
    const end = s.id.clock + s.length
    if (!range) structs.set(s.id.client, [s.id.clock, end])
    else range[1] = Math.max(range[1], end)
    if (s instanceof Y.Skip) skips.set(s.id.client, Math.max(skips.get(s.id.client) ?? 0, end))
  }
  const refs = new Map<number, number>()
  const refer = (id: Y.ID | null | undefined) => {
    if (id && (refs.get(id.client) ?? 0) <= id.clock) refs.set(id.client, id.clock + 1)
  }
  for (const s of decoded.structs) {
    if (!(s instanceof Y.Item)) continue
    refer(s.origin)
    refer(s.rightOrigin)
    if (s.parent instanceof Y.ID) refer(s.parent)
  }
  const deletes = new Map<number, [number, number][]>()
  for (const [client, items] of decoded.ds.clients) deletes.set(client, items.map((d) => [d.clock, d.len]))
  return { structs, skips, deletes, refs }
}

/**
 * True when applying the update to `doc` would change nothing: the doc's state vector covers
 * every struct, and every range of its delete set is already deleted in the doc. A client's
 * resync (sync step 2) carries its whole delete set; this keeps reconnects from republishing
 * it. Cost: one state lookup per client and a binary search per deleted range.
 */
export function isAlreadyApplied(shape: UpdateShape, doc: Y.Doc): boolean {
  for (const [client, [, end]] of shape.structs) if (Y.getState(doc.store, client) < end) return false
  for (const [client, ranges] of shape.deletes) for (const [clock, len] of ranges) if (!isRangeDeleted(doc, client, clock, len)) return false
  return true
}

function isRangeDeleted(doc: Y.Doc, client: number, clock: number, len: number): boolean {
  if (len <= 0) return true
  const structs = doc.store.clients.get(client)
  if (!structs || Y.getState(doc.store, client) < clock + len) return false
  for (let i = Y.findIndexSS(structs, clock); i < structs.length; i++) {
    const struct = structs[i]!
    if (!struct.deleted) return false
    if (struct.id.clock + struct.length >= clock + len) return true
  }
  return false
}

/**
 * True when the update needs structs `doc` does not have: a clock gap (before or inside it), an
 * origin or parent beyond what the doc and the update itself hold, or a delete of unknown
 * clocks. Yjs would keep such an update pending; seeing it here costs no apply (and no probe
 * rebuild).
 */
export function lacksDependencies(shape: UpdateShape, doc: Y.Doc): boolean {
  const known = (client: number) => {
    const state = Y.getState(doc.store, client)
    const own = shape.structs.get(client)
    return own && own[0] <= state ? Math.max(state, own[1]) : state
  }
  for (const [client, [first]] of shape.structs) if (first > Y.getState(doc.store, client)) return true
  // A Skip is a gap inside the client's range: Yjs leaves what follows it pending unless the doc holds the skipped clocks.
  for (const [client, end] of shape.skips) if (end > Y.getState(doc.store, client)) return true
  for (const [client, end] of shape.refs) if (end > known(client)) return true
  for (const [client, ranges] of shape.deletes) for (const [clock, len] of ranges) if (clock + len > known(client)) return true
  return false
}
