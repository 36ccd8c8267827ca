import t from 'tap'
import * as Y from 'yjs'
import { BlameAnswer, READ_BUSY_RETRY_AFTER_S, READ_BUSY_STATUS, STATE_SEQ_HEADER } from '../../contracts/mod.ts'
import { DEFAULT_MAX_HEAVY_READS } from '../../core/read-api.ts'
import { setup, token } from '../helpers/setup.ts'

// Heavy reads (state?at=, blame, history, rollback) run in core's process, on the event loop
// that commits every tenant's edits: they must let it run, and only so many at once.

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()
const auth = { authorization: `Bearer ${await token({ tenant: 'acme' })}` }
const docUrl = (docId: string, view: string, query = '') => `${core.url}/v1/docs/${encodeURIComponent(docId)}/${view}${query}`

/** Rows of the long document: before the fix, one state?at of it held the loop ~600 ms, and blame ~800 ms. */
const ROWS = 100_000
/** Longest event-loop gap a heavy read may cause (a slice is ~10 ms; GC and the test's own work add to it). */
const MAX_GAP_MS = 100

/**
 * ROWS one-character updates of one client, typed at the end, straight into the op log (no
 * snapshot: state?at replays them all), each with its own ingest time 10 ms apart (so blame has
 * ROWS spans), and the document's compacted state. Returns the text and the last stream sequence.
 */
async function seedLongLog(docId: string, tenant = 'acme', rows = ROWS): Promise<{ text: string; lastSeq: number }> {
  const doc = new Y.Doc()
  doc.clientID = 4242
  const updates: Uint8Array[] = []
  doc.on('update', (u: Uint8Array) => updates.push(u))
  for (let i = 0; i < rows; i++) doc.getText('t').insert(i, String.fromCharCode(97 + (i % 26)))
  const start = Date.now() - rows * 10
  for (let i = 0; i < rows; i += 5_000) {
    const part = updates.slice(i, i + 5_000)
    await stack.db.query(
      `INSERT INTO op_log (tenant, doc_id, stream_seq, msg_id, user_id, edge_id, update, status, ingest_ts)
       SELECT $6, $1, s, m, 'typist', 'seed', u, 'applied', to_timestamp(ms / 1000.0) FROM unnest($2::bigint[], $3::text[], $4::bytea[], $5::float8[]) AS x(s, m, u, ms)`,
      [docId, part.map((_, j) => 1_000_000 + i + j), part.map((_, j) => `seed-${i + j}`), part.map((u) => Buffer.from(u)), part.map((_, j) => start + (i + j) * 10), tenant],
    )
  }
  // The compacted state too, as core keeps it: the plain state view reads that, not the log.
  await stack.db.query(
    `INSERT INTO docs (tenant, doc_id, state, state_vector, last_stream_seq, op_count, through_op_id)
     VALUES ($6, $1, $2, $3, $4, $5, (SELECT max(id) FROM op_log WHERE tenant = $6 AND doc_id = $1))`,
    [docId, Buffer.from(Y.encodeStateAsUpdate(doc)), Buffer.from(Y.encodeStateVector(doc)), 1_000_000 + rows - 1, rows, tenant],
  )
  const text = doc.getText('t').toString()
  doc.destroy()
  return { text, lastSeq: 1_000_000 + rows - 1 }
}

const long = await seedLongLog('long')

/**
 * The answers of `requests` made at once, and the longest stretch the event loop was held (the
 * test and core share it). A 5 ms tick's lateness counts only as far as the process spent CPU in
 * it: on a busy shared box the process is also taken off the CPU, which is not a held loop.
 */
async function withLoopGap<T>(requests: () => Promise<T>): Promise<{ answers: T; gapMs: number }> {
  // Up to three tries, the one with the shortest gap kept: a read that holds the loop does so
  // every time, while the box's other work (a collection in parallel with other test files'
  // processes) is seldom in the way three times over.
  let best: { answers: T; gapMs: number } | null = null
  for (let attempt = 0; attempt < 3 && (best === null || best.gapMs >= MAX_GAP_MS); attempt++) {
    const tried = await loopGapOf(requests)
    if (best === null || tried.gapMs < best.gapMs) best = tried
  }
  return best!
}

async function loopGapOf<T>(requests: () => Promise<T>): Promise<{ answers: T; gapMs: number }> {
  let gapMs = 0
  let last = performance.now()
  let lastCpu = process.cpuUsage()
  const tick = setInterval(() => {
    const now = performance.now()
    const cpu = process.cpuUsage(lastCpu)
    gapMs = Math.max(gapMs, Math.min(now - last, (cpu.user + cpu.system) / 1_000))
    last = now
    lastCpu = process.cpuUsage()
  }, 5)
  try {
    return { answers: await requests(), gapMs }
  } finally {
    clearInterval(tick)
  }
}

const textOf = (update: Uint8Array) => {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, update)
  return doc.getText('t').toString()
}

t.test('core - state?at=, blame and concurrent state?at of a long op log never hold the event loop long', async (t) => {
  const stateAt = async (seq: number, headers = auth) => {
    const res = await fetch(docUrl('long', 'state', `?at=${seq}`), { headers })
    return { status: res.status, seq: res.headers.get(STATE_SEQ_HEADER), body: new Uint8Array(await res.arrayBuffer()) }
  }
  const one = await withLoopGap(() => stateAt(long.lastSeq))
  t.equal(one.answers.status, 200)
  t.equal(one.answers.seq, String(long.lastSeq))
  t.equal(textOf(one.answers.body), long.text, 'the whole text')
  t.ok(one.gapMs < MAX_GAP_MS, `state?at= over ${ROWS} rows: longest loop gap ${Math.round(one.gapMs)} ms (< ${MAX_GAP_MS})`)

  // Read as bytes while measuring: parsing MBs of JSON in the test would be a gap of its own.
  const blame = await withLoopGap(async () => {
    const res = await fetch(docUrl('long', 'blame'), { headers: auth })
    return { status: res.status, body: await res.text() }
  })
  t.equal(blame.answers.status, 200)
  const answer = BlameAnswer.parse(JSON.parse(blame.answers.body))
  t.equal(answer.seq, long.lastSeq)
  t.equal(answer.spans.length, ROWS, 'a span per update: each has its own time')
  t.equal(answer.spans.map((s) => s.text).join(''), long.text, 'the spans spell the text')
  t.same(answer.spans.at(-1), { text: long.text.at(-1), index: ROWS - 1, user: 'typist', ts: answer.spans.at(-1)!.ts })
  t.ok(blame.gapMs < MAX_GAP_MS, `blame over ${ROWS} rows (${(blame.answers.body.length / 1e6).toFixed(1)} MB): longest loop gap ${Math.round(blame.gapMs)} ms (< ${MAX_GAP_MS})`)

  // Two tenants' documents of the same length (a tenant holds at most half of the 4 slots).
  await seedLongLog('long', 'globex')
  const globexAuth = { authorization: `Bearer ${await token({ tenant: 'globex' })}` }
  const four = await withLoopGap(() => Promise.all([0, 1, 2, 3].map((k) => stateAt(long.lastSeq - k, k < 2 ? auth : globexAuth))))
  t.same(four.answers.map((a) => a.status), [200, 200, 200, 200])
  t.equal(textOf(four.answers[3]!.body), long.text.slice(0, -3), 'each as it was at its point')
  t.ok(four.gapMs < MAX_GAP_MS, `4 concurrent state?at: longest loop gap ${Math.round(four.gapMs)} ms (< ${MAX_GAP_MS})`)
})

t.test('core - heavy reads past the per-core limit get 503 with Retry-After; the others and light reads answer', async (t) => {
  const burst = DEFAULT_MAX_HEAVY_READS * 3
  const heavy = Array.from({ length: burst }, (_, k) =>
    fetch(docUrl('long', k % 4 === 3 ? 'blame' : 'state', k % 4 === 3 ? '' : `?at=${long.lastSeq}`), { headers: auth }).then(async (res) => ({
      status: res.status,
      retryAfter: res.headers.get('retry-after'),
      view: k % 4 === 3 ? 'blame' : 'state',
      body: new Uint8Array(await res.arrayBuffer()),
    })),
  )
  const light = await fetch(docUrl('long', 'state'), { headers: auth })
  t.equal(light.status, 200, 'the plain state is not a heavy read: it answers during the burst')
  await light.arrayBuffer()
  const answers = await Promise.all(heavy)
  const busy = answers.filter((a) => a.status === READ_BUSY_STATUS)
  const served = answers.filter((a) => a.status === 200)
  t.equal(busy.length + served.length, burst, `each is served or told to retry: ${answers.map((a) => a.status).join(' ')}`)
  t.ok(served.length >= 1 && served.length <= burst - 1, `${served.length} served, ${busy.length} refused`)
  t.ok(busy.length >= burst - 2 * DEFAULT_MAX_HEAVY_READS, `at most ${DEFAULT_MAX_HEAVY_READS} in flight: ${busy.length} of ${burst} refused`)
  for (const a of busy) {
    t.equal(a.retryAfter, String(READ_BUSY_RETRY_AFTER_S), 'Retry-After')
    t.match(JSON.parse(Buffer.from(a.body).toString()), { error: /retry/ })
  }
  for (const a of served.filter((a) => a.view === 'state')) t.equal(textOf(a.body), long.text, 'a served state?at is whole')
  const after = await fetch(docUrl('long', 'history'), { headers: auth })
  t.equal(after.status, 200, 'slots are given back: a heavy read after the burst is served')
  await after.arrayBuffer()
})

t.test('core - one tenant holds at most half the heavy-read slots: another tenant\'s heavy read is served during its burst', async (t) => {
  const small = await seedLongLog('small', 'globex', 100)
  const globexAuth = { authorization: `Bearer ${await token({ tenant: 'globex' })}` }
  const burst = DEFAULT_MAX_HEAVY_READS * 2
  const acme = Array.from({ length: burst }, () => fetch(docUrl('long', 'state', `?at=${long.lastSeq}`), { headers: auth }).then(async (res) => (await res.arrayBuffer(), res.status)))
  await new Promise((resolve) => setTimeout(resolve, 50)) // acme's reads hold their slots (each takes hundreds of ms)
  const globex = await fetch(docUrl('small', 'state', `?at=${small.lastSeq}`), { headers: globexAuth })
  t.equal(globex.status, 200, 'globex is served while acme\'s burst runs')
  t.equal(textOf(new Uint8Array(await globex.arrayBuffer())), small.text)
  const statuses = await Promise.all(acme)
  t.ok(statuses.includes(200) && statuses.includes(READ_BUSY_STATUS), `acme's burst is served in part, the rest told to retry: ${statuses.join(' ')}`)
})
