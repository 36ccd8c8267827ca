// Single-edit latency on an idle pipeline: client→client fan-out (same edge and across edges
// through NATS) and client insert → PostgreSQL commit, against raw JetStream publish+ack of the
// same envelopes as the baseline. Starts its own nats-server and PostgreSQL (test/helpers/setup.ts);
// edges, core and clients run in this one process.
//   node --import tsx loadtest/latency.ts   (BENCH_SAMPLES, BENCH_WARMUP, BENCH_GAP_MS override)
import { execFileSync } from 'node:child_process'
import { cpus, totalmem } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import * as Y from 'yjs'
import { jetstream } from '@nats-io/jetstream'
import { editIngestSubject, editMsgId, encodeEnvelope } from '../contracts/mod.ts'
import { natsServerBin } from '../scripts/lib/binaries.mjs'
import { setup, token, type Stack } from '../test/helpers/setup.ts'
import { yclient } from '../test/helpers/client.ts'

function intEnv(name: string, fallback: number, min: number): number {
  const raw = process.env[name]
  const n = raw === undefined ? fallback : Number(raw)
  if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`)
  return n
}

/** Measured edits per pair type and raw publishes. Default 300. */
const SAMPLES = intEnv('BENCH_SAMPLES', 300, 1)
/** Edits before measuring (rooms, consumers, files warm up); still verified in the op log. Default 10. */
const WARMUP = intEnv('BENCH_WARMUP', 10, 0)
/** Pause after an edit has arrived before the next one. Default 20. */
const GAP_MS = intEnv('BENCH_GAP_MS', 20, 0)
/** Brief: ingest → materialized state P95 < 300 ms. */
const TARGET_P95_MS = 300
const EDIT_TIMEOUT_MS = 5_000
const COMMIT_TIMEOUT_MS = 15_000
const TENANT = 'acme'

interface Summary { n: number; p50: number; p95: number; p99: number; max: number }

function summarize(samples: number[]): Summary {
  if (samples.length === 0) throw new Error('no samples')
  const s = [...samples].sort((a, b) => a - b)
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!
  const r = (x: number) => Math.round(x * 1000) / 1000
  return { n: s.length, p50: r(at(0.5)), p95: r(at(0.95)), p99: r(at(0.99)), max: r(s[s.length - 1]!) }
}

const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)))
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer))
}

/** One client's run of single-char inserts on one doc. */
interface EditRun {
  tenant: string
  docId: string
  /** Yjs clientID of the writer: edit i is its clock i. */
  clientId: number
  /** Date.now() at each edit (warm-up included), for pairing with op-log commits. */
  wallMs: number[]
  /** Measured samples (warm-up excluded), ms. */
  latencyMs: number[]
}

/** Raw JetStream publish+ack of edge-shaped envelopes straight to the ingest subject. */
async function rawPublish(stack: Stack): Promise<EditRun & { payloadBytes: number }> {
  const js = jetstream(await stack.connect())
  const docId = 'bench-raw'
  const src = new Y.Doc()
  let update: Uint8Array = new Uint8Array()
  src.on('update', (u: Uint8Array) => (update = u))
  const run = { tenant: 'bench', docId, clientId: src.clientID, wallMs: [] as number[], latencyMs: [] as number[], payloadBytes: 0 }
  for (let i = 0; i < WARMUP + SAMPLES; i++) {
    src.getText('t').insert(i, 'x')
    const wall = Date.now()
    const payload = encodeEnvelope({ v: 1, tenant: 'bench', docId, userId: 'user-1', update, ingestTs: wall, edgeId: 'edge-test-bench0' })
    const t0 = performance.now()
    const ack = await js.publish(editIngestSubject('bench', docId), payload, { msgID: editMsgId('bench', docId, update), timeout: EDIT_TIMEOUT_MS })
    const t1 = performance.now()
    if (ack.duplicate) throw new Error(`raw publish ${i} was reported as a duplicate`)
    run.wallMs.push(wall)
    if (i >= WARMUP) run.latencyMs.push(t1 - t0)
    run.payloadBytes = Math.max(run.payloadBytes, payload.length)
    await sleep(GAP_MS)
  }
  src.destroy()
  return run
}

/** A types one char at a time; latency is A's insert → B's doc 'update' that carries that clock. */
async function fanout(writerUrl: string, readerUrl: string, docId: string, tok: string): Promise<EditRun> {
  const a = yclient(writerUrl, docId, tok)
  const b = yclient(readerUrl, docId, tok)
  try {
    await withTimeout(Promise.all([a.synced(), b.synced()]), EDIT_TIMEOUT_MS, `clients of ${docId} synced`)
    await sleep(1_000) // let the rooms' delayed resync from core pass
    const clientId = a.doc.clientID
    let expect = -1
    let arrived: (t: number) => void = () => undefined
    b.doc.on('update', () => {
      if (expect >= 0 && Y.getState(b.doc.store, clientId) > expect) {
        expect = -1
        arrived(performance.now())
      }
    })
    const run: EditRun = { tenant: TENANT, docId, clientId, wallMs: [], latencyMs: [] }
    for (let i = 0; i < WARMUP + SAMPLES; i++) {
      if (Y.getState(a.doc.store, clientId) !== i) throw new Error(`${docId}: writer clock ${Y.getState(a.doc.store, clientId)} before edit ${i}`)
      const got = new Promise<number>((resolve) => (arrived = resolve))
      expect = i
      const wall = Date.now()
      const t0 = performance.now()
      a.text.insert(i, 'x')
      const t1 = await withTimeout(got, EDIT_TIMEOUT_MS, `${docId}: edit ${i} to reach the other client`)
      run.wallMs.push(wall)
      if (i >= WARMUP) run.latencyMs.push(t1 - t0)
      await sleep(GAP_MS)
    }
    return run
  } finally {
    a.destroy()
    b.destroy()
  }
}

interface OpCommit { id: string; update: Buffer; status: string; committed_ms: number; ingest_ms: number }

/**
 * Waits for the run's op-log rows, checks they pair 1:1 with its edits (row i is the writer's
 * clock i, applied), and returns insert → commit and edge ingest → commit per measured edit.
 */
async function commits(stack: Stack, run: EditRun): Promise<{ materializeMs: number[]; edgeToCommitMs: number[] }> {
  const load = async () =>
    (await stack.db.query<OpCommit>(
      `SELECT id, update, status, extract(epoch FROM committed_at)::float8 * 1000 AS committed_ms,
              extract(epoch FROM ingest_ts)::float8 * 1000 AS ingest_ms
       FROM op_log WHERE tenant = $1 AND doc_id = $2 ORDER BY id`,
      [run.tenant, run.docId],
    )).rows
  const deadline = Date.now() + COMMIT_TIMEOUT_MS
  let rows = await load()
  while (rows.length < run.wallMs.length && Date.now() < deadline) {
    await sleep(50)
    rows = await load()
  }
  await sleep(200) // a late extra row would show up here
  rows = await load()
  if (rows.length !== run.wallMs.length) {
    throw new Error(`${run.tenant}/${run.docId}: ${run.wallMs.length} edits but ${rows.length} op_log rows after ${COMMIT_TIMEOUT_MS} ms`)
  }
  const materializeMs: number[] = []
  const edgeToCommitMs: number[] = []
  rows.forEach((row, i) => {
    const { from, to } = Y.parseUpdateMeta(row.update)
    if (from.size !== 1 || from.get(run.clientId) !== i || to.get(run.clientId) !== i + 1 || row.status !== 'applied') {
      throw new Error(`${run.tenant}/${run.docId}: op_log row ${row.id} (#${i}) is not edit ${i}: status ${row.status}, clocks ${JSON.stringify([...from])}..${JSON.stringify([...to])}`)
    }
    if (i < WARMUP) return
    materializeMs.push(row.committed_ms - run.wallMs[i]!)
    edgeToCommitMs.push(row.committed_ms - row.ingest_ms)
  })
  return { materializeMs, edgeToCommitMs }
}

async function main(stack: Stack): Promise<void> {
  const cpu = cpus()
  const machine = {
    cpu: `${cpu[0]?.model ?? 'unknown'} x ${cpu.length}`,
    memGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    natsServer: execFileSync(natsServerBin() ?? 'nats-server', ['--version']).toString().trim(),
    postgres: (await stack.db.query<{ version: string }>('SELECT version()')).rows[0]!.version,
  }
  for (const [k, v] of Object.entries(machine)) console.log(`${k.padEnd(11)} ${v}`)
  console.log(`samples     ${SAMPLES} per series (+${WARMUP} warm-up), gap ${GAP_MS} ms, everything but the servers in one Node process\n`)

  await stack.core()
  const edge1 = await stack.edge()
  const edge2 = await stack.edge()
  const tok = await token({ tenant: TENANT })

  const raw = await rawPublish(stack)
  await commits(stack, raw) // core drains the baseline doc before the pipeline runs are measured
  const cross = await fanout(edge1.url, edge2.url, 'bench-cross-edge', tok)
  const same = await fanout(edge1.url, edge1.url, 'bench-same-edge', tok)
  const crossCommits = await commits(stack, cross)
  const sameCommits = await commits(stack, same)

  const rawS = summarize(raw.latencyMs)
  const crossS = summarize(cross.latencyMs)
  const sameS = summarize(same.latencyMs)
  const matS = summarize([...crossCommits.materializeMs, ...sameCommits.materializeMs])
  const edgeS = summarize([...crossCommits.edgeToCommitMs, ...sameCommits.edgeToCommitMs])
  const rows: [string, Summary][] = [
    [`raw JetStream publish+ack (${raw.payloadBytes} B)`, rawS],
    ['fanout same edge', sameS],
    ['fanout cross edge (NATS)', crossS],
    ['client insert -> PG commit', matS],
    ['edge ingest -> PG commit', edgeS],
  ]
  const col = (x: string | number) => String(x).padStart(9)
  console.log(`${'latency, ms'.padEnd(38)}${['n', 'p50', 'p95', 'p99', 'max'].map(col).join('')}`)
  for (const [name, s] of rows) console.log(`${name.padEnd(38)}${[s.n, s.p50, s.p95, s.p99, s.max].map(col).join('')}`)
  const ratios = {
    sameEdgeFanoutP50OverRawP50: ratio(sameS.p50, rawS.p50),
    crossEdgeFanoutP50OverRawP50: ratio(crossS.p50, rawS.p50),
    materializeP95OverTarget: ratio(matS.p95, TARGET_P95_MS),
  }
  console.log(`\nfanout p50 / raw publish p50: same edge ${ratios.sameEdgeFanoutP50OverRawP50}x, cross edge ${ratios.crossEdgeFanoutP50OverRawP50}x`)
  console.log(`insert -> commit p95 / ${TARGET_P95_MS} ms target: ${ratios.materializeP95OverTarget}`)
  const result = { bench: 'latency', machine, samples: SAMPLES, warmup: WARMUP, gapMs: GAP_MS, payloadBytes: raw.payloadBytes, rawPublish: rawS, fanoutSameEdge: sameS, fanoutCrossEdge: crossS, insertToCommit: matS, edgeIngestToCommit: edgeS, targetP95Ms: TARGET_P95_MS, ratios }
  console.log(JSON.stringify(result))
}

// Quotas AGG can mirror within the test stack's service quota (AGG holds a copy of every tenant stream).
const stack = await setup({ tenants: { acme: 128 * 1024 ** 2, bench: 128 * 1024 ** 2 } })
let cleaning: Promise<void> | null = null
const cleanup = () => (cleaning ??= stack.cleanup())
let code = 0
const interrupted = () => void cleanup().finally(() => process.exit(130))
process.once('SIGINT', interrupted)
process.once('SIGTERM', interrupted)
try {
  await main(stack)
} catch (err) {
  console.error('latency benchmark failed:', err)
  code = 1
} finally {
  try {
    await cleanup()
  } catch (err) {
    console.error('cleanup failed:', err)
    code = 1
  }
}
process.exit(code)
