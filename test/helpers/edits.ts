import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import type { JetStreamClient } from '@nats-io/jetstream'
import { editIngestSubject, editMsgId, encodeEnvelope } from '../../contracts/mod.ts'

/** A Yjs update inserting `text` by a fixed client id (so tests can reason about clocks). */
export function edit(text: string, clientID: number): Uint8Array {
  const doc = new Y.Doc()
  doc.clientID = clientID
  doc.getText('t').insert(0, text)
  return Y.encodeStateAsUpdate(doc)
}

/** Publishes an update the way an edge does (envelope, subject, msg id; the edge's clock `ingestTs`; `source` 'http' as HTTP ingest marks it; its sender `userId`) and returns the PubAck. */
export function publishEdit(js: JetStreamClient, tenant: string, docId: string, update: Uint8Array, msgID = editMsgId(tenant, docId, update), ingestTs = Date.now(), source?: 'http', userId = 'u') {
  const env = encodeEnvelope({ v: 1, tenant, docId, userId, update, ingestTs, edgeId: 'test', ...(source && { source }) })
  return js.publish(editIngestSubject(tenant, docId), env, { msgID })
}

/** A document whose client `clientID` typed `text` into its text 't'. */
export function typed(clientID: number, text: string): Y.Doc {
  const doc = new Y.Doc()
  doc.clientID = clientID
  doc.getText('t').insert(0, text)
  return doc
}

/** A replica of `doc` writing as `clientID` (set after the apply: Yjs gives a doc a new id when remote structs carry its own). */
export function replicaOf(doc: Y.Doc, clientID: number): Y.Doc {
  const replica = new Y.Doc()
  Y.applyUpdate(replica, Y.encodeStateAsUpdate(doc))
  replica.clientID = clientID
  return replica
}

/** `what` inserted at `at` under `client`'s next clocks on top of `doc`: other content than that client's author will send there, as a forger sends it. */
export function forgeNextClocks(doc: Y.Doc, client: number, what: string, at = 0): Uint8Array {
  const forger = replicaOf(doc, client)
  const before = Y.encodeStateVector(forger)
  forger.getText('t').insert(at, what)
  return Y.encodeStateAsUpdate(forger, before)
}

/** `update` (one client's structs) followed by a client block of `skipClient` holding only a Skip of `len` clocks: what no Yjs encoder writes. */
export function withTrailingSkip(update: Uint8Array, skipClient: number, len: number): Uint8Array {
  const structs = Y.decodeUpdate(update).structs
  const enc = new Y.UpdateEncoderV1()
  encoding.writeVarUint(enc.restEncoder, 2)
  encoding.writeVarUint(enc.restEncoder, structs.length)
  enc.writeClient(structs[0]!.id.client)
  encoding.writeVarUint(enc.restEncoder, structs[0]!.id.clock)
  for (const s of structs) s.write(enc, 0)
  encoding.writeVarUint(enc.restEncoder, 1)
  enc.writeClient(skipClient)
  encoding.writeVarUint(enc.restEncoder, 0)
  new Y.Skip(Y.createID(skipClient, 0), len).write(enc, 0)
  encoding.writeVarUint(enc.restEncoder, 0) // delete set
  return enc.toUint8Array()
}

/**
 * Puts a message no test erases at AGG's head, as older messages are in production: an erasure
 * of the newest messages of a stream that holds nothing older moves its head past what other
 * partitions' consumers looked at, and the next core takes that for lost messages (core/streams.ts
 * findHole; a known limit). Call it before a file's first erasure.
 */
export function holdAggHead(js: JetStreamClient) {
  return publishEdit(js, 'acme', 'holds-agg-head', edit('kept', 50))
}

/**
 * `base`: client 7 types "ab"; `malformed`: client 8's "X" between them, its right neighbour
 * rewritten to its left one (7:0), which no Yjs client makes (runtime/yjs-items.ts).
 */
export function malformedEdit(): { base: Uint8Array; malformed: Uint8Array } {
  const doc = new Y.Doc()
  doc.clientID = 7
  doc.getText('t').insert(0, 'ab')
  const base = Y.encodeStateAsUpdate(doc)
  const before = Y.encodeStateVector(doc)
  doc.clientID = 8
  doc.getText('t').insert(1, 'X')
  const malformed = Y.encodeStateAsUpdate(doc, before)
  // The item's origin (client 7, clock 0) then right origin (7, 1), as one-byte varuints.
  const at = malformed.findIndex((_, i) => malformed[i] === 7 && malformed[i + 1] === 0 && malformed[i + 2] === 7 && malformed[i + 3] === 1)
  if (at < 0) throw new Error('the origins of the edit were not where expected')
  malformed[at + 3] = 0
  const item = Y.decodeUpdate(malformed).structs[0] as Y.Item
  if (item.rightOrigin?.clock !== 0 || item.origin?.clock !== 0) throw new Error('the forged item does not name one struct as both neighbours')
  return { base, malformed }
}

/**
 * `base`: client 9 sets map key "k" (item 9:0) and inserts [1, 2] into array "a" (9:1, 9:2);
 * `misplaced`: client 10's array insert between them, its right neighbour rewritten to the map
 * entry 9:0, a struct of another list (runtime/yjs-items.ts misplacedItem).
 */
export function misplacedEdit(): { base: Uint8Array; misplaced: Uint8Array } {
  const doc = new Y.Doc()
  doc.clientID = 9
  doc.getMap('m').set('k', 'v')
  doc.getArray('a').insert(0, [1, 2])
  const base = Y.encodeStateAsUpdate(doc)
  const before = Y.encodeStateVector(doc)
  doc.clientID = 10
  doc.getArray('a').insert(1, [3])
  const misplaced = Y.encodeStateAsUpdate(doc, before)
  const at = misplaced.findIndex((_, i) => misplaced[i] === 9 && misplaced[i + 1] === 1 && misplaced[i + 2] === 9 && misplaced[i + 3] === 2)
  if (at < 0) throw new Error('the origins of the edit were not where expected')
  misplaced[at + 3] = 0
  return { base, misplaced }
}

/**
 * `base`: client 11 sets map key "k" (item 11:0); `respliced`: client 11 again, from a fresh doc,
 * types "xyz" (11:0–11:2 in text "t"). Yjs skips the clock it holds and hangs the rest after the
 * map entry while keeping the text as its parent (runtime/yjs-items.ts misplacedItem).
 */
export function resplicedEdit(): { base: Uint8Array; respliced: Uint8Array } {
  const doc = new Y.Doc()
  doc.clientID = 11
  doc.getMap('m').set('k', 'v')
  const forger = new Y.Doc()
  forger.clientID = 11
  forger.getText('t').insert(0, 'xyz')
  return { base: Y.encodeStateAsUpdate(doc), respliced: Y.encodeStateAsUpdate(forger) }
}

/** A text item of `client` at `clock`, with the neighbours or parent a test chooses (none by default: parent "t"). */
export function textItem(client: number, clock: number, text: string, o: { origin?: Y.ID; parent?: Y.ID } = {}): Y.Item {
  return new Y.Item(Y.createID(client, clock), null, o.origin ?? null, null, null, o.parent ?? (o.origin ? null : 't') as never, null, new Y.ContentString(text))
}

/** A V1 update of `items` (one client, contiguous clocks), written by Yjs's own item encoder: items no Yjs client makes. */
export function itemsUpdate(items: Y.Item[]): Uint8Array {
  const encoder = new Y.UpdateEncoderV1()
  encoding.writeVarUint(encoder.restEncoder, 1) // clients
  encoding.writeVarUint(encoder.restEncoder, items.length)
  encoding.writeVarUint(encoder.restEncoder, items[0]!.id.client)
  encoding.writeVarUint(encoder.restEncoder, items[0]!.id.clock)
  for (const item of items) item.write(encoder, 0)
  encoding.writeVarUint(encoder.restEncoder, 0) // an empty delete set
  return encoder.toUint8Array()
}

/** An update of `client` (clock 0): a map entry whose right neighbour is the item `right` (no Yjs client makes one). */
export function mapEntryWithRightNeighbour(client: number, right: { client: number; clock: number }): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, 1) // clients
  encoding.writeVarUint(e, 1) // structs
  encoding.writeVarUint(e, client)
  encoding.writeVarUint(e, 0) // clock
  encoding.writeUint8(e, 8 | 0x40) // ContentAny, a right origin
  encoding.writeVarUint(e, right.client)
  encoding.writeVarUint(e, right.clock)
  encoding.writeVarUint(e, 1) // one value
  encoding.writeAny(e, 'x')
  encoding.writeVarUint(e, 0) // empty delete set
  return encoding.toUint8Array(e)
}

/**
 * `base`: client 9 sets map key "k" (9:0) and inserts [1, 2] into array "a" (9:1, 9:2); `mapEntry`:
 * client `writer` sets "k2" (writer:0); `arrayItem`: client `item` inserts 3 between 1 and 2, its
 * right neighbour rewritten to writer:0 — the map entry, not there yet, so no check before
 * applying can place it.
 */
export function releaseCase(writer: number, item: number) {
  const doc = new Y.Doc()
  doc.clientID = 9
  doc.getMap('m').set('k', 'v')
  doc.getArray('a').insert(0, [1, 2])
  const base = Y.encodeStateAsUpdate(doc)
  const w = new Y.Doc()
  Y.applyUpdate(w, base)
  w.clientID = writer
  const sv = Y.encodeStateVector(w)
  w.getMap('m').set('k2', 'w')
  const mapEntry = Y.encodeStateAsUpdate(w, sv)
  const i = new Y.Doc()
  Y.applyUpdate(i, item === writer ? Y.encodeStateAsUpdate(w) : base)
  i.clientID = item
  const before = Y.encodeStateVector(i)
  i.getArray('a').insert(1, [3])
  const arrayItem = Y.encodeStateAsUpdate(i, before)
  const at = arrayItem.findIndex((_, n) => arrayItem[n] === 9 && arrayItem[n + 1] === 1 && arrayItem[n + 2] === 9 && arrayItem[n + 3] === 2)
  if (at < 0) throw new Error('the neighbours were not where expected')
  arrayItem.set([writer, 0], at + 2)
  return { base, mapEntry, arrayItem }
}
