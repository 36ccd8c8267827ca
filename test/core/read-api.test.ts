import t from 'tap'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, readState, until, yclient } from '../helpers/client.ts'
import { counterValue } from '../helpers/metric-value.ts'
import { DocEvent, ServiceUser } from '../../contracts/mod.ts'
import { docNotifier } from '../helpers/doc-notices.ts'
import { deleteDocument } from '../../core/deletion.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()
const edge = await stack.edge()

const readSessions = async () => (await stack.db.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE application_name = 'docflow-core-read' ORDER BY pid")).rows.map((r) => r.pid)

t.test('core - a started core has its read sessions open before the first load needs them', async (t) => {
  t.ok((await readSessions()).length >= 4, 'a cold load (two queries at once) finds open sessions')
})

t.test('core - read API answers 200 with the document, 404/401/403 otherwise', async (t) => {
  const tok = await token({ tenant: 'acme', docs: ['notes/*'] })
  const c = yclient(edge.url, 'notes/2026 plan ü', tok)
  t.teardown(() => c.destroy())
  await c.synced()
  c.text.insert(0, 'unicode ok')
  await until('materialized', async () => (await materializedText(core.url, 'notes/2026 plan ü', tok)) === 'unicode ok')
  const res = await fetch(`${core.url}/v1/docs/${encodeURIComponent('notes/2026 plan ü')}/state`, { headers: { authorization: `Bearer ${tok}` } })
  t.equal(res.status, 200)
  t.equal(res.headers.get('content-type'), 'application/octet-stream')
  t.equal(await readState(core.url, 'notes/none', tok), 404, 'unknown doc')
  t.equal(await readState(core.url, 'other/doc', tok), 403, 'doc outside the token')
  t.equal(await readState(core.url, 'notes/2026 plan ü', await token({ tenant: 'acme' }, -60)), 401, 'expired token (past the 30 s clock tolerance)')
  t.equal((await fetch(`${core.url}/v1/docs/x/state`)).status, 401, 'no token')
  t.equal((await fetch(`${core.url}/healthz`)).status, 200)
  const metrics = await (await fetch(`${core.opsUrl}/metrics`)).text()
  t.match(metrics, /docflow_core_updates_total\{outcome="applied"/)
  t.equal((await fetch(`${core.url}/v1/nothing`)).status, 404)
})

t.test('core - its read connections stay open while idle, so a load after a quiet spell opens no PostgreSQL session', async (t) => {
  const tok = await token({ tenant: 'acme' })
  await readState(core.url, 'quiet-doc', tok)
  const before = await readSessions()
  t.ok(before.length > 0, 'the read opened sessions')
  await new Promise((r) => setTimeout(r, 11_000)) // past pg-pool's default idle timeout (10 s)
  await readState(core.url, 'quiet-doc', tok)
  const after = await readSessions()
  t.same(after.filter((pid) => before.includes(pid)), before, 'every session of the first read is still open')
})

t.test('core - GET /state merges a document\'s op-log tail once per change, not per read', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const c = yclient(edge.url, 'tailed', tok)
  t.teardown(() => c.destroy())
  await c.synced()
  c.text.insert(0, 'first')
  await until('materialized', async () => (await materializedText(core.url, 'tailed', tok)) === 'first')
  // The first edit made the document's state; the next one is its op-log tail (compaction waits for CORE_COMPACT_EVERY_OPS).
  c.text.insert(5, ' second')
  await until('the tail is read', async () => (await materializedText(core.url, 'tailed', tok)) === 'first second')
  const merges = async () => ({ merged: await counterValue(core.core.metrics.readStateMerges, { outcome: 'merged' }), cached: await counterValue(core.core.metrics.readStateMerges, { outcome: 'cached' }) })
  const before = await merges()
  for (let i = 0; i < 5; i++) t.equal(await materializedText(core.url, 'tailed', tok), 'first second')
  t.same(await merges(), { merged: before.merged, cached: before.cached + 5 }, 'five reads, no merge')
  c.text.insert(12, ' third')
  await until('the new tail is read', async () => (await materializedText(core.url, 'tailed', tok)) === 'first second third')
  t.ok((await merges()).merged > before.merged, 'merged again once it changed')
  t.ok((await counterValue(core.core.metrics.readStateCacheBytes)) > 0, 'kept in memory')
  // Deleted (or erased): the merged state goes from memory too, not only from the answers.
  await deleteDocument(stack.db, { tenant: 'acme', docId: 'tailed', actor: 'ops@test', reason: 'test' })
  await docNotifier(await stack.connect(ServiceUser.Admin))({ tenant: 'acme', docId: 'tailed', event: DocEvent.Deleted })
  await until('dropped on the notice', async () => (await counterValue(core.core.metrics.readStateCacheBytes)) === 0)
})
