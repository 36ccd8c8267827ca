// A document with many updates for the core scenarios (cold load, state?at=), built fast through
// the real pipeline: the edge's own Publisher (edge/publisher.ts: batches of valid envelopes on the
// tenant's edit subject, logged in as the edge service user) → JetStream → core's partition
// workers, which commit the op log, compact (every CORE_COMPACT_EVERY_OPS) and snapshot as they
// would for editors. The updates are real Yjs edits of one text: writing sessions (a new Yjs client
// every SESSION_UPDATES updates) typing single characters at a cursor that sometimes jumps, with
// some backspaces, so the stored state is as fragmented as a long-edited document's.
import { connect, type NatsConnection } from '@nats-io/transport-node'
import * as Y from 'yjs'
import { serviceInboxPrefix, ServiceUser } from '../../contracts/mod.ts'
import { createEdgeMetrics } from '../../edge/metrics.ts'
import { UpdatePublisher } from '../../edge/publisher.ts'
import { createRegistry } from '../../runtime/metrics.ts'
import { createLogger } from '../../runtime/log.ts'
import type { DocFlowParts } from '../systems.ts'

/** Updates one Yjs client (a writing session) makes before the next one takes over. */
const SESSION_UPDATES = 500
/** Updates handed to the publisher before waiting for their acks (bounds memory and queueing). */
const PUBLISH_WINDOW = 4_096
/**
 * The last updates are published one at a time, each waiting for its ack, the way a lone typist's
 * reach JetStream: core commits them in small batches, so the document is left with an op-log
 * tail after its compacted state (half of CORE_COMPACT_EVERY_OPS's default 256), as a document
 * usually is, instead of the fresh compaction the bulk's big batches end with.
 */
const TYPED_TAIL = 128
/** How long the op log may take to hold every update after the last ack. */
const COMMIT_WAIT_MS = 300_000

export interface BuiltDoc {
  docId: string
  updates: number
  /** The document's text, to check what a load returns. */
  text: string
  /** The updates, in publish order (= op-log order: one publisher lane). */
  updateList: Uint8Array[]
  /** Y.encodeStateAsUpdate bytes of the finished document. */
  stateBytes: number
  /** Publish of the first update → op log holding the last, s. */
  buildS: number
}

/** A deterministic PRNG (mulberry32), so every run builds the same document. */
function random(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
}

/** `count` single-edit Yjs updates of one text, in order, and the text they make. */
export function typedUpdates(count: number, seed = 1): { updates: Uint8Array[]; text: string } {
  const rnd = random(seed)
  const doc = new Y.Doc()
  const text = doc.getText('t')
  const updates: Uint8Array[] = []
  doc.on('update', (u: Uint8Array) => updates.push(u))
  let cursor = 0
  const letters = 'etaoin shrdlu cmfwyp vbgkqj xz'
  while (updates.length < count) {
    if (updates.length % SESSION_UPDATES === 0) doc.clientID = Math.floor(rnd() * 0x7fffffff) + 1 // the next session writes
    const r = rnd()
    if (r < 0.04) cursor = Math.floor(rnd() * (text.length + 1)) // the writer clicks elsewhere
    if (r > 0.93 && cursor > 0) {
      text.delete(--cursor, 1) // backspace
    } else {
      text.insert(cursor++, letters[Math.floor(rnd() * letters.length)]!)
    }
  }
  const result = { updates, text: text.toString() }
  doc.destroy()
  return result
}

/** Connects as the edge service user (its publish rights and reply inboxes). */
export function edgeConnection(parts: DocFlowParts, name: string): Promise<NatsConnection> {
  return connect({ servers: parts.natsUrl, user: parts.edgeNatsUser, pass: parts.edgeNatsPass, name, inboxPrefix: serviceInboxPrefix(ServiceUser.Edge), noEcho: true })
}

/** Rows of `docId` in the op log. */
export async function opLogRows(parts: DocFlowParts, docId: string): Promise<number> {
  const r = await parts.db.query<{ n: string }>('SELECT count(*) AS n FROM op_log WHERE tenant = $1 AND doc_id = $2', [parts.tenant, docId])
  return Number(r.rows[0]!.n)
}

/** Publishes `count` typed updates to `docId` and waits until core committed every one. */
export async function buildDoc(parts: DocFlowParts, docId: string, count: number, say: (line: string) => void): Promise<BuiltDoc> {
  const t0 = performance.now()
  const { updates, text } = typedUpdates(count)
  const stateBytes = (() => {
    const d = new Y.Doc()
    for (const u of updates) Y.applyUpdate(d, u)
    const n = Y.encodeStateAsUpdate(d).byteLength
    d.destroy()
    return n
  })()
  say(`core doc: ${count.toLocaleString('en-US')} typed updates made in ${((performance.now() - t0) / 1000).toFixed(1)} s (${text.length.toLocaleString('en-US')} characters, ${stateBytes.toLocaleString('en-US')} bytes of state); publishing to ${docId}`)
  const nc = await edgeConnection(parts, 'bench-core-doc')
  const started = performance.now()
  try {
    const log = createLogger('bench-publisher', 'warn')
    const publisher = new UpdatePublisher(nc, `bench-${process.pid}`, createEdgeMetrics(createRegistry('bench')), log, { partitions: parts.editPartitions })
    try {
      const bulk = Math.max(0, updates.length - TYPED_TAIL)
      for (let i = 0; i < bulk; i += PUBLISH_WINDOW) {
        await Promise.all(updates.slice(i, Math.min(bulk, i + PUBLISH_WINDOW)).map((u) => publisher.publish(parts.tenant, docId, 'bench-writer', u)))
      }
      // Core commits the bulk before the typed tail comes, so the tail is not folded into a big batch.
      const deadline = Date.now() + COMMIT_WAIT_MS
      while ((await opLogRows(parts, docId)) < bulk) {
        if (Date.now() > deadline) throw new Error(`core did not commit the first ${bulk} updates of ${docId} in ${COMMIT_WAIT_MS / 1000} s`)
        await new Promise((r) => setTimeout(r, 100))
      }
      for (const u of updates.slice(bulk)) await publisher.publish(parts.tenant, docId, 'bench-writer', u)
    } finally {
      publisher.close()
    }
  } finally {
    await nc.close()
  }
  const published = performance.now()
  say(`core doc: ${count.toLocaleString('en-US')} updates in JetStream after ${((published - started) / 1000).toFixed(1)} s; waiting for core to commit them`)
  for (;;) {
    const rows = await opLogRows(parts, docId)
    if (rows >= count) break
    if (performance.now() - published > COMMIT_WAIT_MS) throw new Error(`core committed ${rows} of ${count} updates of ${docId} in ${COMMIT_WAIT_MS / 1000} s`)
    await new Promise((r) => setTimeout(r, 250))
  }
  const buildS = (performance.now() - started) / 1000
  say(`core doc: op log holds all ${count.toLocaleString('en-US')} updates of ${docId}, ${buildS.toFixed(1)} s after the first publish`)
  return { docId, updates: count, text, updateList: updates, stateBytes, buildS }
}
