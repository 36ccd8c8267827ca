import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import { DeadLetterReason } from '../contracts/mod.ts'

/**
 * Duplicate op ids in Yjs terms. An update is a set of (clientID, clock) ranges; Yjs skips every
 * part of one that the document already holds (clock below its state for that client) without
 * looking at it, so a retry is harmless — but the same id with other content would be dropped
 * just as silently while its sender's document keeps that content: the two diverge for good.
 *
 * Before an update is applied, its structs that overlap the document's state are compared with
 * the document's items for the same clocks: content (per clock unit), origin, right origin, map
 * key and (for items placed without neighbours) parent. Any difference is a violation:
 * - clock-regression: the client's structs start below the document's state for it, differ, and
 *   go on past it — its clock went backwards (it restarted from an older state under the same
 *   id), and Yjs would splice its new tail onto a head that is not its own;
 * - conflicting-duplicate: the differing structs lie wholly within what the document holds.
 * An overlap whose content is equal is a retry (fully inside: Yjs calls it a duplicate) or a
 * resend with new clocks after it (applied normally).
 *
 * What cannot be compared is skipped: content the document garbage-collected (deleted items keep
 * only their length: ContentDeleted or GC structs) or that arrives deleted, and Skip structs.
 * Structs past the document's state (pending ones included) are not duplicates and not looked at.
 *
 * Cost: the first client's start clock is read off the update's header (four varuints); only an
 * update whose first client starts below the document's state, or that carries several clients,
 * is decoded — a typing client's update starts at the document's state and is never decoded here.
 */
export interface OverlapViolation {
  reason: typeof DeadLetterReason.ConflictingDuplicate | typeof DeadLetterReason.ClockRegression
  client: number
  clock: number
  /** What differs at (client, clock). */
  detail: string
}

/** A violation as a reason line (a dead letter's reason, an edge's refusal log). */
export const describeOverlap = (v: OverlapViolation): string => `${v.reason}: client ${v.client} clock ${v.clock} already holds other content (${v.detail})`

export function findOverlapViolation(doc: Y.Doc, update: Uint8Array): OverlapViolation | null {
  const head = readFirstClient(update)
  if (head === null || head.clients === 0) return null
  if (head.clients === 1 && head.clock >= Y.getState(doc.store, head.client)) return null
  const { structs } = Y.decodeUpdate(update)
  // Highest clock the update reaches per client: does it go past the document's state?
  const ends = new Map<number, number>()
  for (const s of structs) ends.set(s.id.client, Math.max(ends.get(s.id.client) ?? 0, s.id.clock + s.length))
  for (const s of structs) {
    const state = Y.getState(doc.store, s.id.client)
    if (s.id.clock >= state || !(s instanceof Y.Item)) continue
    const diff = compareOverlap(doc, s, state)
    if (diff === null) continue
    const reason = (ends.get(s.id.client) ?? 0) > state ? DeadLetterReason.ClockRegression : DeadLetterReason.ConflictingDuplicate
    return { reason, client: s.id.client, clock: diff.clock, detail: diff.detail }
  }
  return null
}

/** First difference between `incoming` and the document's items over [its clock, min(its end, state)). */
function compareOverlap(doc: Y.Doc, incoming: Y.Item, state: number): { clock: number; detail: string } | null {
  const client = incoming.id.client
  const held = doc.store.clients.get(client)!
  const end = Math.min(incoming.id.clock + incoming.length, state)
  for (let clock = incoming.id.clock; clock < end; ) {
    const item = held[Y.findIndexSS(held, clock)]!
    const n = Math.min(end, item.id.clock + item.length) - clock
    if (item instanceof Y.Item) {
      const detail = differs(doc, incoming, item, clock, n)
      if (detail) return { clock, detail }
    }
    clock += n
  }
  return null
}

/** Why `a` (incoming) and `b` (held) differ over `n` clock units from `clock`, or null. */
function differs(doc: Y.Doc, a: Y.Item, b: Y.Item, clock: number, n: number): string | null {
  // A split item's right part has the left part's last id as origin; both keep the right origin.
  const originAt = (item: Y.Item) => (clock === item.id.clock ? item.origin : Y.createID(item.id.client, clock - 1))
  if (!sameId(originAt(a), originAt(b))) return 'origin'
  if (!sameId(a.rightOrigin, b.rightOrigin)) return 'right origin'
  if (clock === a.id.clock && a.parentSub !== null && a.parentSub !== b.parentSub) return 'map key'
  if (clock === a.id.clock && a.origin === null && a.rightOrigin === null && !sameParent(doc, a.parent, b.parent)) return 'parent'
  const ca = a.content
  const cb = b.content
  if (ca instanceof Y.ContentDeleted || cb instanceof Y.ContentDeleted) return null // not comparable (see above)
  if (ca.constructor !== cb.constructor) return 'content type'
  const fromA = clock - a.id.clock
  const fromB = clock - b.id.clock
  if (ca instanceof Y.ContentString) return ca.str.slice(fromA, fromA + n) === (cb as Y.ContentString).str.slice(fromB, fromB + n) ? null : 'text'
  if (ca instanceof Y.ContentFormat) {
    const f = cb as Y.ContentFormat
    return ca.key === f.key && sameValues([ca.value], [f.value]) ? null : 'format'
  }
  if (ca instanceof Y.ContentType) return ca.getRef() === (cb as Y.ContentType).getRef() ? null : 'type'
  if (ca instanceof Y.ContentDoc) return ca.doc?.guid === (cb as Y.ContentDoc).doc?.guid ? null : 'subdocument'
  // Any, JSON, Binary, Embed: values compared one per clock unit.
  return sameValues(ca.getContent().slice(fromA, fromA + n), cb.getContent().slice(fromB, fromB + n)) ? null : 'content'
}

/**
 * Values compared in Yjs's own Any encoding: it carries what updates can carry (bigint, bytes,
 * undefined) where JSON.stringify throws on a bigint or loses the rest.
 */
function sameValues(a: unknown[], b: unknown[]): boolean {
  const bytes = (values: unknown[]) => {
    const e = encoding.createEncoder()
    encoding.writeAny(e, values as encoding.AnyEncodable)
    return encoding.toUint8Array(e)
  }
  return Buffer.compare(bytes(a), bytes(b)) === 0
}

const sameId = (a: Y.ID | null, b: Y.ID | null) => (a === null || b === null ? a === b : a.client === b.client && a.clock === b.clock)

/** An incoming parent (root name or the id of the type's item) against a held item's parent type. */
function sameParent(doc: Y.Doc, incoming: unknown, held: unknown): boolean {
  const type = held as Y.AbstractType<unknown>
  if (typeof incoming === 'string') return type._item === null && doc.share.get(incoming) === type
  if (incoming instanceof Y.ID) return type._item !== null && sameId(incoming, type._item.id)
  return true // inferred from the origins, compared above
}

/** Clients in a v1 update and its first client's id and start clock, off the header; null when it does not parse. */
function readFirstClient(update: Uint8Array): { clients: number; client: number; clock: number } | null {
  let at = 0
  const next = (): number | null => {
    let value = 0
    for (let mult = 1; at < update.length && mult < 2 ** 53; mult *= 128) {
      const byte = update[at++]!
      value += (byte & 0x7f) * mult
      if (byte < 0x80) return value
    }
    return null
  }
  const clients = next()
  if (clients === null || clients === 0) return clients === null ? null : { clients: 0, client: 0, clock: 0 }
  if (next() === null) return null // number of structs
  const client = next()
  const clock = next()
  return client === null || clock === null ? null : { clients, client, clock }
}
