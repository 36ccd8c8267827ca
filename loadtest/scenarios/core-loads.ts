// The cold-load and state?at= scenarios on DocFlow (issue 10's benchmarks): a document of N typed
// updates is built through the real pipeline (core-doc.ts), core is restarted so no process holds
// it in memory, and then it is loaded over and over, each path in turn:
// - edge first socket: a stock y-websocket client opens the document on an edge with no room
//   for it (the previous socket's room closed first): the edge asks core over NATS, core reads
//   PostgreSQL (compacted state + op-log tail), the client gets the full state. What a user feels.
// - core state over NATS: the request an edge's room load makes (df.core.state, taking the stored
//   state and the op-log tail apart), timed alone.
// - read API: GET /v1/docs/<id>/state on core (always from PostgreSQL).
// - core worker cache miss: core's readDocParts and a Y.Doc built from its parts the way the
//   worker's cache builds one (measured in the bench process against DocFlow's PostgreSQL).
// Nothing writes to the document while it is loaded, so core's workers never load it into their
// cache: the op log is checked unchanged at the end (else the figures are not cold, and say so).
// state?at=: GET …/state?at=<stream seq> of a point early (10%) and late (90%) in the document's
// life: the newest snapshot at or before it (blob store) plus the op-log rows after it.
import * as Y from 'yjs'
import { ServiceSubjects } from '../../contracts/mod.ts'
import { requestState } from '../../runtime/state-transfer.ts'
import { readDocParts } from '../../core/store.ts'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
import { quantile } from '../peers/common.ts'
import type { DocFlowParts, RunningSystem } from '../systems.ts'
import { buildDoc, edgeConnection, opLogRows, type BuiltDoc } from './core-doc.ts'

/** Longest one load may take before the scenario fails. */
const LOAD_TIMEOUT_MS = 60_000
/**
 * Loads of each path run first and not counted: core was just restarted (so that no process
 * holds the document), and a process's first loads pay for its JIT and its first pool
 * connections, which a core that has served for a while does not. Reported apart.
 */
export const COLD_WARMUP_LOADS = 5
/** Where in the document's life (share of its updates) the early and late points are. */
export const STATE_AT_POINTS = { early: 0.1, late: 0.9 } as const

export interface Distribution {
  n: number
  p50Ms: number
  p95Ms: number
  p99Ms: number
  maxMs: number
}

export function distribution(samples: number[]): Distribution {
  const s = [...samples].sort((a, b) => a - b)
  return { n: s.length, p50Ms: quantile(s, 0.5), p95Ms: quantile(s, 0.95), p99Ms: quantile(s, 0.99), maxMs: s.length ? s[s.length - 1]! : NaN }
}

export const COLD_PATHS = ['edge first socket', 'core state over NATS', 'read API GET state', 'core worker cache miss'] as const
export type ColdPath = (typeof COLD_PATHS)[number]
/** The path the < 100 ms target is judged on: what a user opening the document waits for. */
export const JUDGED_PATH: ColdPath = 'edge first socket'

export interface ColdLoadResult {
  doc: Omit<BuiltDoc, 'text' | 'updateList'>
  /** Bytes of the compacted state and op-log rows after it when the loads ran. */
  stored: { stateBytes: number; tailRows: number }
  paths: { path: ColdPath; ms: Distribution }[]
  /** The COLD_WARMUP_LOADS first loads of each path, not counted in `paths`. */
  warmup: { path: ColdPath; ms: Distribution }[]
  /** The op log still held exactly the built updates after the loads (nothing made core cache the doc). */
  cold: boolean
  /** Edge first socket: sockets closed before sync, by close code (the stock client reconnected; the time includes it). */
  edgeCloses: Record<string, number>
  /** Of those closes: ms from the socket's open to its close (NaN: it never opened). */
  edgeClosedAfterOpenMs: number[]
  /** Edge first socket, only the loads whose first socket synced. */
  edgeFirstTry: Distribution
  /**
   * Those loads split at the largest frame (the state's sync step 2): socket open → that frame
   * received (the edge, core and PostgreSQL), and the stock client's handling of it (its Yjs apply).
   */
  edgeSplit: { stateFrameInMs: Distribution; clientApplyMs: Distribution }
}

export interface StateAtPoint {
  name: keyof typeof STATE_AT_POINTS
  /** Stream sequence asked for (?at=) and how many of the document's updates it holds. */
  seq: number
  updatesHeld: number
  /** The snapshot it starts from (stream seq; 0: none) and the op-log rows replayed after it. */
  snapshotSeq: number
  replayedRows: number
  ms: Distribution
}

export interface StateAtResult {
  docId: string
  updates: number
  snapshots: number
  points: StateAtPoint[]
}

export interface CoreLoadsOptions {
  /** Updates the document gets. */
  updates: number
  /** Loads per path (cold) and per early point (state?at=); the late point gets min(loads, 10). */
  loads: number
  /** Which of the two to run. */
  cold: boolean
  stateAt: boolean
  say?: (line: string) => void
}

async function timed<T>(what: string, fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = performance.now()
  let timer: NodeJS.Timeout | undefined
  try {
    const value = await Promise.race([fn(), new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer in ${LOAD_TIMEOUT_MS} ms`)), LOAD_TIMEOUT_MS)))])
    return [performance.now() - t0, value]
  } finally {
    clearTimeout(timer)
  }
}

/** A gauge's value from a Prometheus text page (sum over its series); NaN when absent. */
export async function metricValue(url: string, name: string): Promise<number> {
  const text = await (await fetch(url)).text()
  let sum = NaN
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || !/[\s{]/.test(line[name.length] ?? '')) continue
    sum = (Number.isNaN(sum) ? 0 : sum) + Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return sum
}

/** Waits until the edge holds no room (the last socket's room closed), so the next socket loads cold. */
async function noRooms(parts: DocFlowParts): Promise<void> {
  const deadline = Date.now() + LOAD_TIMEOUT_MS
  while ((await metricValue(parts.edgeMetricsUrl, 'docflow_edge_rooms')) !== 0) {
    if (Date.now() > deadline) throw new Error('the edge kept a room open after its last socket left')
    await new Promise((r) => setTimeout(r, 5))
  }
}

async function readApi(parts: DocFlowParts, docId: string, query = ''): Promise<Uint8Array> {
  const res = await fetch(`${parts.coreUrl}/v1/docs/${encodeURIComponent(docId)}/state${query}`, { headers: { authorization: `Bearer ${parts.token}` } })
  const body = new Uint8Array(await res.arrayBuffer())
  if (res.status !== 200) throw new Error(`GET state${query}: ${res.status} ${Buffer.from(body).toString('utf8').slice(0, 200)}`)
  return body
}

/** The text of the updates applied in turn (a state, then maybe its tail). */
const textOf = (...updates: Uint8Array[]): string => {
  const d = new Y.Doc()
  for (const u of updates) Y.applyUpdate(d, u)
  const s = d.getText('t').toString()
  d.destroy()
  return s
}

function parts(system: RunningSystem): DocFlowParts {
  if (!system.docflow) throw new Error(`${system.name}: the core scenarios run on DocFlow only`)
  return system.docflow
}

/** Builds the document, restarts core, then runs the cold loads and/or the state?at= loads. */
export async function coreLoads(system: RunningSystem, o: CoreLoadsOptions): Promise<{ doc: BuiltDoc; cold?: ColdLoadResult; stateAt?: StateAtResult }> {
  const say = o.say ?? (() => {})
  const p = parts(system)
  const docId = `core-${o.updates}-${Date.now()}`
  const doc = await buildDoc(p, docId, o.updates, say)
  say('core loads: restarting core so no process holds the document in memory')
  await p.restartCore()
  const out: { doc: BuiltDoc; cold?: ColdLoadResult; stateAt?: StateAtResult } = { doc }
  if (o.cold) out.cold = await coldLoads(system, p, doc, o.loads, say)
  if (o.stateAt) out.stateAt = await stateAtLoads(p, doc, o.loads, say)
  return out
}

async function coldLoads(system: RunningSystem, p: DocFlowParts, doc: BuiltDoc, loads: number, say: (line: string) => void): Promise<ColdLoadResult> {
  const stored = await p.db.query<{ bytes: number | null; tail: string }>(
    `SELECT (SELECT octet_length(state) FROM docs WHERE tenant = $1 AND doc_id = $2) AS bytes,
            (SELECT count(*) FROM op_log o WHERE o.tenant = $1 AND o.doc_id = $2
               AND o.id > COALESCE((SELECT through_op_id FROM docs WHERE tenant = $1 AND doc_id = $2), 0)) AS tail`,
    [p.tenant, doc.docId],
  )
  const nc = await edgeConnection(p, 'bench-cold-load')
  const samples = new Map<ColdPath, number[]>(COLD_PATHS.map((path) => [path, []]))
  const warmup = new Map<ColdPath, number[]>(COLD_PATHS.map((path) => [path, []]))
  const edgeCloses = new Map<string, number>()
  const closedAfterOpenMs: number[] = []
  const closesSoFar = () => [...edgeCloses.values()].reduce((a, b) => a + b, 0)
  /** Edge first socket loads whose first socket synced (no reconnect inside the time). */
  const firstTry: number[] = []
  const split = { stateFrameInMs: [] as number[], clientApplyMs: [] as number[] }
  let loadSplit = { stateFrameInMs: NaN, clientApplyMs: NaN }
  try {
    const loaders: Record<ColdPath, () => Promise<Uint8Array | Uint8Array[] | string>> = {
      'edge first socket': async () => {
        const client = new Y.Doc()
        const provider = new WebsocketProvider(system.wsUrl, doc.docId, client, { params: system.params(doc.docId), WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket, disableBc: true })
        // A socket the edge closed before sync (the stock client reconnects): counted with its code.
        let synced = false
        let openedAt = NaN
        let largest = 0
        loadSplit = { stateFrameInMs: NaN, clientApplyMs: NaN }
        provider.on('status', (e: { status: string }) => {
          if (e.status !== 'connected') return
          openedAt = performance.now()
          // Timed around the provider's own handler: the frame is whole when it runs.
          const ws = provider.ws as unknown as { onmessage: (m: { data: ArrayBuffer }) => void }
          const handle = ws.onmessage
          ws.onmessage = (m) => {
            const at = performance.now()
            handle(m)
            if (m.data.byteLength > largest) {
              largest = m.data.byteLength
              loadSplit = { stateFrameInMs: at - openedAt, clientApplyMs: performance.now() - at }
            }
          }
        })
        provider.on('connection-close', (event: { code?: number } | null) => {
          if (synced) return // our own destroy
          const code = String(event?.code ?? 'none')
          edgeCloses.set(code, (edgeCloses.get(code) ?? 0) + 1)
          closedAfterOpenMs.push(performance.now() - openedAt) // NaN: closed before it opened
          openedAt = NaN
        })
        try {
          await new Promise<void>((resolve) => provider.on('sync', (s: boolean) => s && resolve()))
          synced = true
          return client.getText('t').toString()
        } finally {
          provider.destroy()
          client.destroy()
        }
      },
      'core state over NATS': async () => {
        const reply = await requestState(nc, ServiceSubjects.coreState, { tenant: p.tenant, docId: doc.docId, stateVector: new Uint8Array([0]), acceptsTail: true }, LOAD_TIMEOUT_MS)
        if (reply?.status !== 'found') throw new Error(`core answered ${JSON.stringify(reply)}`)
        return reply.tail ? [reply.update, reply.tail] : reply.update
      },
      'read API GET state': () => readApi(p, doc.docId),
      'core worker cache miss': async () => {
        const stored = await readDocParts(p.db, p.tenant, doc.docId)
        if (!stored) throw new Error('readDocParts found no document')
        const d = new Y.Doc()
        d.transact(() => {
          if (stored.state) Y.applyUpdate(d, stored.state)
          for (const u of stored.tail) Y.applyUpdate(d, u)
        })
        const text = d.getText('t').toString()
        d.destroy()
        return text
      },
    }
    const firstBytes = new Map<ColdPath, number>()
    say(`cold load: ${COLD_WARMUP_LOADS} warm-up loads, then ${loads} loads, of each of ${COLD_PATHS.length} paths, interleaved`)
    for (let i = -COLD_WARMUP_LOADS; i < loads; i++) {
      for (const path of COLD_PATHS) {
        if (path === 'edge first socket') await noRooms(p)
        const closesBefore = closesSoFar()
        const [ms, got] = await timed(path, loaders[path])
        // Checked untimed: a text must be the whole text; a state must make it (the first time)
        // and be as long as the first one every time after.
        const updates = typeof got === 'string' ? null : [got].flat()
        const bytes = updates?.reduce((n, u) => n + u.byteLength, 0) ?? 0
        const first = i === -COLD_WARMUP_LOADS
        if (updates === null ? got !== doc.text : first ? textOf(...updates) !== doc.text : bytes !== firstBytes.get(path)) {
          throw new Error(`${path}: load ${i + 1 + COLD_WARMUP_LOADS} did not return the ${doc.text.length} characters written`)
        }
        if (updates && first) firstBytes.set(path, bytes)
        if (i < 0) {
          warmup.get(path)!.push(ms)
          continue
        }
        samples.get(path)!.push(ms)
        if (path === 'edge first socket' && closesSoFar() === closesBefore) {
          firstTry.push(ms)
          split.stateFrameInMs.push(loadSplit.stateFrameInMs)
          split.clientApplyMs.push(loadSplit.clientApplyMs)
        }
      }
      if (i >= 0 && (i + 1) % 10 === 0) say(`cold load: ${i + 1}/${loads}`)
    }
  } finally {
    await nc.close()
  }
  const cold = (await opLogRows(p, doc.docId)) === doc.updates
  const { text: _t, updateList: _u, ...docInfo } = doc
  return {
    doc: docInfo,
    stored: { stateBytes: Number(stored.rows[0]!.bytes ?? 0), tailRows: Number(stored.rows[0]!.tail) },
    paths: COLD_PATHS.map((path) => ({ path, ms: distribution(samples.get(path)!) })),
    warmup: COLD_PATHS.map((path) => ({ path, ms: distribution(warmup.get(path)!) })),
    cold,
    edgeCloses: Object.fromEntries(edgeCloses),
    edgeFirstTry: distribution(firstTry),
    edgeSplit: { stateFrameInMs: distribution(split.stateFrameInMs), clientApplyMs: distribution(split.clientApplyMs) },
    edgeClosedAfterOpenMs: closedAfterOpenMs,
  }
}

async function stateAtLoads(p: DocFlowParts, doc: BuiltDoc, loads: number, say: (line: string) => void): Promise<StateAtResult> {
  const snapshots = await p.db.query<{ stream_seq: string }>('SELECT stream_seq FROM snapshots WHERE tenant = $1 AND doc_id = $2 ORDER BY stream_seq', [p.tenant, doc.docId])
  const snapshotSeqs = snapshots.rows.map((r) => Number(r.stream_seq))
  const points: StateAtPoint[] = []
  for (const name of ['early', 'late'] as const) {
    const offset = Math.floor(doc.updates * STATE_AT_POINTS[name])
    const at = await p.db.query<{ stream_seq: string }>('SELECT stream_seq FROM op_log WHERE tenant = $1 AND doc_id = $2 ORDER BY id OFFSET $3 LIMIT 1', [p.tenant, doc.docId, offset])
    const seq = Number(at.rows[0]!.stream_seq)
    const snapshotSeq = snapshotSeqs.filter((s) => s <= seq).at(-1) ?? 0
    const counts = await p.db.query<{ held: string; replayed: string }>(
      'SELECT count(*) FILTER (WHERE stream_seq <= $3) AS held, count(*) FILTER (WHERE stream_seq > $4 AND stream_seq <= $3) AS replayed FROM op_log WHERE tenant = $1 AND doc_id = $2',
      [p.tenant, doc.docId, seq, snapshotSeq],
    )
    const updatesHeld = Number(counts.rows[0]!.held)
    // The answer is checked once (untimed) against the first updatesHeld updates replayed here.
    const expected = (() => {
      const d = new Y.Doc()
      for (const u of doc.updateList.slice(0, updatesHeld)) Y.applyUpdate(d, u)
      const s = d.getText('t').toString()
      d.destroy()
      return s
    })()
    const n = name === 'early' ? loads : Math.min(loads, 10)
    say(`state?at=: ${n} loads of the ${name} point (seq ${seq}, ${updatesHeld.toLocaleString('en-US')} of ${doc.updates.toLocaleString('en-US')} updates; snapshot at seq ${snapshotSeq || 'none'} + ${Number(counts.rows[0]!.replayed).toLocaleString('en-US')} op-log rows)`)
    const samples: number[] = []
    for (let i = 0; i < n; i++) {
      const [ms, body] = await timed(`state?at=${seq}`, () => readApi(p, doc.docId, `?at=${seq}`))
      if (i === 0 && textOf(body) !== expected) throw new Error(`state?at=${seq} is not the document after its first ${updatesHeld} updates`)
      samples.push(ms)
    }
    points.push({ name, seq, updatesHeld, snapshotSeq, replayedRows: Number(counts.rows[0]!.replayed), ms: distribution(samples) })
  }
  return { docId: doc.docId, updates: doc.updates, snapshots: snapshotSeqs.length, points }
}
