import * as Y from 'yjs'

/**
 * Why an update's items cannot integrate alike everywhere, or null. Yjs places an item between
 * its origin (its left neighbour when it was made) and its rightOrigin without checking them: an
 * item whose two neighbours are the same struct, or whose neighbour or parent is a clock of its
 * own client not made before it, corrupts the list it lands in, differently with what else the document
 * holds, so replicas that apply in different orders (core in stream order, each client with its
 * own edits first) diverge. No Yjs client makes such an item.
 */
export function malformedItem(structs: readonly (Y.Item | Y.GC | Y.Skip)[]): string | null {
  for (const s of structs) {
    if (!(s instanceof Y.Item)) continue
    const { id, origin, rightOrigin } = s
    if (origin && rightOrigin && origin.client === rightOrigin.client && origin.clock === rightOrigin.clock) {
      return `item ${id.client}:${id.clock} has the same struct as its left and right neighbour`
    }
    for (const n of [origin, rightOrigin]) {
      if (n && n.client === id.client && n.clock >= id.clock) return `item ${id.client}:${id.clock} names ${n.client}:${n.clock}, not made before it, as its neighbour`
    }
    // A parent type is made before what it holds; Yjs throws on a parent it cannot resolve when
    // the item integrates, which for an item waiting pending is under some later, innocent update.
    if (s.parent instanceof Y.ID && s.parent.client === id.client && s.parent.clock >= id.clock) {
      return `item ${id.client}:${id.clock} names ${s.parent.client}:${s.parent.clock}, not made before it, as its parent`
    }
  }
  return null
}

/**
 * malformedItem of an update's structs, and misplacedNeighbours and unplacedNeighbour in `doc`
 * when given (an update no edge tried on the document); null too when the bytes do not decode
 * (applying them says why).
 */
export function malformedUpdate(update: Uint8Array, doc?: Y.Doc): string | null {
  let structs
  try {
    ;({ structs } = Y.decodeUpdate(update))
  } catch {
    return null
  }
  return malformedItem(structs) ?? (doc ? (misplacedNeighbours(doc, structs) ?? unplacedNeighbour(doc, structs)) : null)
}

/**
 * Why an item of an update no edge tried, one that names a right neighbour, names a struct of
 * another client that neither `doc` nor the update holds, or null. Such an item would wait
 * pending, its place unjudged (misplacedNeighbours cannot decide it), and go in with whatever
 * update brings that struct — the other client's, innocent, which judging the release would
 * refuse instead. In stream order a client's update names only what reached core before it. A
 * neighbour of the item's own client may be missing (its posts out of order): the update that
 * brings it is that client's, which then answers for the release (core/batch.ts). An item with
 * no right neighbour links no lists.
 */
export function unplacedNeighbour(doc: Y.Doc, structs: readonly (Y.Item | Y.GC | Y.Skip)[]): string | null {
  if (!structs.some((s) => s instanceof Y.Item && s.rightOrigin)) return null
  const own = structLookup(structs)
  const holds = (id: Y.ID): boolean => id.clock < Y.getState(doc.store, id.client) || own(id) !== null
  for (const s of structs) {
    if (!(s instanceof Y.Item) || !s.rightOrigin) continue
    for (const n of [s.origin, s.rightOrigin]) {
      if (n && n.client !== s.id.client && !holds(n)) return `item ${s.id.client}:${s.id.clock} names ${n.client}:${n.clock}, another client's struct the document does not have yet, as a neighbour`
    }
  }
  return null
}

/** Per client, the clock an update's structs start at and the one past their end (Y.parseUpdateMeta). */
export type UpdateMeta = ReturnType<typeof Y.parseUpdateMeta>

/**
 * Why an update that `doc` just took (its `meta`) left one of its items next to a neighbour of another list,
 * or null. An item's parent comes from its left neighbour; a right neighbour in another list (or
 * key), or any right neighbour for a map entry (Yjs never gives one), links two lists together,
 * and replicas then disagree. A left neighbour in another list comes from a struct that restarts
 * below its client's clock with other content: Yjs keeps the decoded parent of its new tail but
 * hangs it after the held struct before it, and the encoded document then says otherwise (a
 * fresh load puts it in the held struct's list). Seen only after applying: the neighbours are
 * the document's, so the edge's probe judges a socket's update, and core judges only what HTTP
 * ingest published untried (it applies what edges accepted, as the clients did).
 */
export function misplacedItem(doc: Y.Doc, { from, to }: UpdateMeta): string | null {
  const elsewhere = (item: Y.Item, neighbour: Y.ID) => {
    const other = Y.getItem(doc.store, neighbour)
    return other instanceof Y.Item && (other.parent !== item.parent || other.parentSub !== item.parentSub)
  }
  for (const [client, start] of from) {
    const structs = doc.store.clients.get(client)
    // Only what integrated: clocks from the client's state on wait pending (a sequence gap) and
    // are in no list yet; an HTTP client posting out of order sends such updates.
    const end = Math.min(to.get(client) ?? start, Y.getState(doc.store, client))
    if (!structs || start >= end) continue
    for (let i = Y.findIndexSS(structs, start); i < structs.length && structs[i]!.id.clock < end; i++) {
      const item = structs[i]!
      if (!(item instanceof Y.Item)) continue
      const name = `item ${item.id.client}:${item.id.clock}`
      if (item.origin && elsewhere(item, item.origin)) return `${name} names a left neighbour in another list`
      if (!item.rightOrigin) continue
      if (item.parentSub !== null) return `${name}, a map entry, names a right neighbour`
      if (elsewhere(item, item.rightOrigin)) return `${name} names a right neighbour in another list`
    }
  }
  return null
}

/** Where an item goes: its list or map (a type of the document, or a root type's name) and map key. */
type Place = { parent: object | string; sub: string | null }

/**
 * misplacedItem before applying, from the update's decoded `structs` and what `doc` holds: an
 * item whose two neighbours lie in different lists or keys, or a map entry with a right
 * neighbour. Undecided places (a neighbour garbage-collected, or not there yet) pass; applying
 * and misplacedItem judge those. Cheap, so a document need not be rebuilt after every such
 * update (core rebuilds one it applied a misplaced update to).
 */
export function misplacedNeighbours(doc: Y.Doc, structs: readonly (Y.Item | Y.GC | Y.Skip)[]): string | null {
  // Only a right neighbour can be misplaced: most typing (at a text's end) names none.
  if (!structs.some((s) => s instanceof Y.Item && s.rightOrigin)) return null
  // Linear in the update's structs (a paste carries tens of thousands): its own structs found by
  // binary search (structLookup); each item's place decided once, chains walked in a loop.
  const own = structLookup(structs)
  const ownItemAt = (id: Y.ID): Y.Item | null => {
    const s = own(id)
    return s instanceof Y.Item ? s : null
  }
  // What the document holds first: an update may carry again structs the document has (a client
  // resending since an older state vector), and its decoded copy of a type is not the document's.
  const itemAt = (id: Y.ID): Y.Item | null => {
    if (id.clock < Y.getState(doc.store, id.client)) {
      const held = Y.getItem(doc.store, id)
      return held instanceof Y.Item ? held : null
    }
    return ownItemAt(id)
  }
  /** An item's place from its own parent, or undefined when its neighbours decide it. */
  const parentPlace = (item: Y.Item): Place | null | undefined => {
    if (item.parent !== null && !(item.parent instanceof Y.ID) && typeof item.parent !== 'string') return { parent: item.parent, sub: item.parentSub }
    if (typeof item.parent === 'string') return { parent: doc.share.get(item.parent) ?? item.parent, sub: item.parentSub }
    if (item.parent instanceof Y.ID) {
      const type = itemAt(item.parent)
      return type && type.content instanceof Y.ContentType ? { parent: type.content.type, sub: item.parentSub } : null
    }
    return undefined
  }
  const places = new Map<Y.Item, Place | null>()
  const placeOf = (start: Y.Item): Place | null => {
    const chain: Y.Item[] = []
    let place: Place | null = null
    for (let item: Y.Item | null = start; item; item = (item.origin && itemAt(item.origin)) || (item.rightOrigin && itemAt(item.rightOrigin))) {
      if (places.has(item)) {
        place = places.get(item)!
        break
      }
      places.set(item, null) // a cycle of neighbours decides nothing
      chain.push(item)
      const own = parentPlace(item)
      if (own !== undefined) {
        place = own
        break
      }
    }
    for (const item of chain) places.set(item, place)
    return place
  }
  for (const s of structs) {
    if (!(s instanceof Y.Item) || !s.rightOrigin) continue
    const name = `item ${s.id.client}:${s.id.clock}`
    const right = itemAt(s.rightOrigin)
    const rightPlace = right && placeOf(right)
    if (!rightPlace) continue
    if (rightPlace.sub !== null) return `${name} names a map entry as its right neighbour`
    const left = s.origin && itemAt(s.origin)
    const leftPlace = left && placeOf(left)
    if (leftPlace && (leftPlace.parent !== rightPlace.parent || leftPlace.sub !== rightPlace.sub)) return `${name} names neighbours in different lists`
  }
  return null
}

/**
 * The struct of an update's decoded `structs` that covers an id, or null (Skips hold nothing):
 * each client's structs in clock order, found by binary search, so a lookup per struct of a
 * paste of tens of thousands stays linear overall.
 */
function structLookup(structs: readonly (Y.Item | Y.GC | Y.Skip)[]): (id: Y.ID) => Y.Item | Y.GC | null {
  const byClient = new Map<number, (Y.Item | Y.GC)[]>()
  for (const s of structs) {
    if (s instanceof Y.Skip) continue
    const list = byClient.get(s.id.client)
    if (list) list.push(s)
    else byClient.set(s.id.client, [s])
  }
  for (const list of byClient.values()) list.sort((x, y) => x.id.clock - y.id.clock)
  return (id) => {
    const list = byClient.get(id.client)
    if (!list) return null
    let lo = 0
    let hi = list.length - 1
    while (lo <= hi) {
      const mid = (lo + hi) >> 1
      const s = list[mid]!
      if (id.clock < s.id.clock) hi = mid - 1
      else if (id.clock >= s.id.clock + s.length) lo = mid + 1
      else return s
    }
    return null
  }
}

/** Inputs per Y.mergeUpdates call in mergeMany. */
const MERGE_FAN_IN = 32

/**
 * Y.mergeUpdates of many updates, merged in rounds of MERGE_FAN_IN: the same bytes, in linear
 * time. Y.mergeUpdates re-sorts its inputs per struct it writes, so one call is quadratic in their
 * count: 10,000 single-edit updates take ~2 s and 100,000 ~7 min on the event loop, against
 * ~0.05 s and ~0.5 s here (a document's op-log tail when compaction falls behind).
 */
export function mergeMany(updates: readonly Uint8Array[]): Uint8Array {
  if (updates.length === 0) throw new Error('mergeMany: no update to merge')
  let round = updates
  while (round.length > 1) {
    const next: Uint8Array[] = []
    for (let i = 0; i < round.length; i += MERGE_FAN_IN) {
      const group = round.slice(i, i + MERGE_FAN_IN)
      next.push(group.length === 1 ? group[0]! : Y.mergeUpdates(group))
    }
    round = next
  }
  return round[0]!
}

/**
 * Per client, the clock ranges [start, end) of `structs` that carry content, adjacent ones
 * joined; a Skip (the gap Y.mergeUpdates leaves between non-adjacent updates) writes no clock.
 */
export function writtenRanges(structs: readonly (Y.Item | Y.GC | Y.Skip)[]): Map<number, [number, number][]> {
  const ranges = new Map<number, [number, number][]>()
  for (const s of structs) {
    if (s instanceof Y.Skip) continue
    const list = ranges.get(s.id.client) ?? []
    list.push([s.id.clock, s.id.clock + s.length])
    ranges.set(s.id.client, list)
  }
  for (const [client, list] of ranges) {
    list.sort((a, b) => a[0] - b[0])
    const joined: [number, number][] = []
    for (const r of list) {
      const last = joined.at(-1)
      if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1])
      else joined.push([r[0], r[1]])
    }
    ranges.set(client, joined)
  }
  return ranges
}

/** Per client, one past the last clock `structs` write (writtenRanges). */
export function writtenEnds(structs: readonly (Y.Item | Y.GC | Y.Skip)[]): Map<number, number> {
  return new Map([...writtenRanges(structs)].map(([client, list]) => [client, list.at(-1)![1]]))
}
