import t from 'tap'
import { jetstream } from '@nats-io/jetstream'
import { EVENT_TIME_HEADER, HTTP_INGEST_PATH } from '../../contracts/mod.ts'
import { setup, token } from '../helpers/setup.ts'
import { until, yclient } from '../helpers/client.ts'
import { counterValue } from '../helpers/metric-value.ts'
import { edit, publishEdit } from '../helpers/edits.ts'

const stack = await setup({ tenants: { acme: 64 * 1024 ** 2, globex: 64 * 1024 ** 2, initech: 64 * 1024 ** 2 } })
t.teardown(() => stack.cleanup())
const core = await stack.core()
const edge = await stack.edge()
const js = jetstream(await stack.connect())

const rowCount = async (tenant: string, docId?: string) =>
  (await stack.db.query('SELECT count(*)::int AS n FROM op_log WHERE tenant = $1 AND ($2::text IS NULL OR doc_id = $2)', [tenant, docId ?? null])).rows[0].n as number
async function publishAndWait(tenant: string, docId: string, texts: string[]): Promise<void> {
  for (const [i, text] of texts.entries()) await publishEdit(js, tenant, docId, edit(text, 100 + i))
  await until(`${tenant}/${docId} committed`, async () => (await rowCount(tenant, docId)) === texts.length)
}

t.test('core - the database itself refuses UPDATE, DELETE and TRUNCATE on the op log', async (t) => {
  await publishAndWait('acme', 'kept', ['one', 'two'])
  const before = (await stack.db.query("SELECT * FROM op_log WHERE doc_id = 'kept' ORDER BY id")).rows
  await t.rejects(stack.db.query("UPDATE op_log SET user_id = 'mallory' WHERE doc_id = 'kept'"), /op_log is append-only: UPDATE refused/, 'UPDATE')
  await t.rejects(stack.db.query("DELETE FROM op_log WHERE doc_id = 'kept'"), /op_log is append-only: DELETE of tenant acme document kept refused/, 'DELETE')
  await t.rejects(stack.db.query('TRUNCATE op_log'), /op_log is append-only: TRUNCATE refused/, 'TRUNCATE')
  // An audit row for another document does not cover this one.
  const c = await stack.db.connect()
  try {
    await c.query('BEGIN')
    await c.query(`INSERT INTO erasures (tenant, doc_id, actor, reason, rows_removed) VALUES ('acme', 'other', 'mallory', 'cover', '{}')`)
    await t.rejects(c.query("DELETE FROM op_log WHERE doc_id = 'kept'"), /DELETE of tenant acme document kept refused/, 'an erasure of another document does not cover it')
  } finally {
    await c.query('ROLLBACK')
    c.release()
  }
  t.same((await stack.db.query("SELECT * FROM op_log WHERE doc_id = 'kept' ORDER BY id")).rows, before, 'the rows are unchanged')
})

t.test('core - docflow_erase removes one document or a whole tenant and records who, why and how many', async (t) => {
  await publishAndWait('acme', 'gdpr', ['a', 'b', 'c'])
  await publishAndWait('globex', 'gdpr', ['same id, other tenant'])
  await publishAndWait('initech', 'x', ['one', 'two'])
  const keptBefore = await rowCount('acme', 'kept')

  const doc = (await stack.db.query("SELECT * FROM docflow_erase('acme', 'gdpr', 'GDPR request 42', 'alice@ops')")).rows[0]
  t.match(doc, { tenant: 'acme', doc_id: 'gdpr', actor: 'alice@ops', reason: 'GDPR request 42', db_user: String, at: Date }, 'the audit row')
  t.same(doc.rows_removed, { op_log: 3, docs: 1, dead_letters: 0 }, 'rows removed per table')
  t.equal(await rowCount('acme', 'gdpr'), 0, 'its op log is gone')
  t.equal((await stack.db.query("SELECT count(*)::int AS n FROM docs WHERE tenant = 'acme' AND doc_id = 'gdpr'")).rows[0].n, 0, 'its state is gone')
  t.equal(await rowCount('acme', 'kept'), keptBefore, 'other documents stay')
  t.equal(await rowCount('globex', 'gdpr'), 1, 'the same document id in another tenant stays')

  await stack.provisioner.remove('initech', { actor: 'bob@ops', reason: 'contract ended' })
  t.equal(await rowCount('initech'), 0, 'tenant removal erased its op log')
  const tenant = (await stack.db.query("SELECT * FROM erasures WHERE tenant = 'initech'")).rows
  t.match(tenant, [{ doc_id: null, actor: 'bob@ops', reason: 'contract ended', rows_removed: { op_log: 2, docs: 1, dead_letters: 0 } }], 'tenant removal is audited as a whole-tenant erasure')
})

t.test('core - the erasures audit table refuses UPDATE, DELETE and TRUNCATE', async (t) => {
  await stack.db.query("SELECT * FROM docflow_erase('acme', 'nothing-here', 'test', 'carol@ops')")
  const before = (await stack.db.query('SELECT * FROM erasures ORDER BY id')).rows
  t.ok(before.length > 0)
  await t.rejects(stack.db.query("UPDATE erasures SET actor = 'nobody'"), /erasures is an append-only audit table: UPDATE refused/, 'UPDATE')
  await t.rejects(stack.db.query('DELETE FROM erasures'), /erasures is an append-only audit table: DELETE refused/, 'DELETE')
  await t.rejects(stack.db.query('TRUNCATE erasures'), /erasures is an append-only audit table: TRUNCATE refused/, 'TRUNCATE')
  t.same((await stack.db.query('SELECT * FROM erasures ORDER BY id')).rows, before, 'the audit rows are unchanged')
})

t.test('core - an offline edit POSTed with X-Event-Time keeps its event time and counts as late; a socket update has event time = ingest time', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const times = async (docId: string) =>
    (await stack.db.query<{ event_ms: number; ingest_ms: number }>("SELECT round(extract(epoch FROM event_ts) * 1000)::float8 AS event_ms, round(extract(epoch FROM ingest_ts) * 1000)::float8 AS ingest_ms FROM op_log WHERE tenant = 'acme' AND doc_id = $1 ORDER BY id", [docId])).rows
  const late = () => counterValue(core.core.metrics.lateUpdates, { tenant: 'acme' })
  const lateBefore = await late()

  const c = yclient(edge.url, 'offline', tok)
  t.teardown(() => c.destroy())
  await c.synced()
  c.text.insert(0, 'live ')
  await until('the socket update committed', async () => (await times('offline')).length === 1)
  const [live] = await times('offline')
  t.equal(live!.event_ms, live!.ingest_ms, 'socket update: event time = ingest time')

  const madeAt = Date.now() - 3_600_000
  const res = await fetch(`${edge.url.replace(/^ws:/, 'http:')}${HTTP_INGEST_PATH}/offline/updates`, {
    method: 'POST',
    body: edit('made on a plane', 555) as BodyInit,
    headers: { authorization: `Bearer ${tok}`, 'idempotency-key': 'plane-1', [EVENT_TIME_HEADER]: new Date(madeAt).toISOString() },
  })
  t.equal(res.status, 202)
  // Same document, so the same partition: its batch commits after the socket update's.
  await until('the late update is counted', async () => (await late()) === lateBefore + 1)
  const rows = await times('offline')
  t.equal(rows.length, 2)
  t.equal(rows[1]!.event_ms, madeAt, 'the event time is the one the client sent')
  t.ok(rows[1]!.ingest_ms - madeAt >= 3_600_000, 'beside its ingest time')
  t.equal(await late(), lateBefore + 1, 'only the offline edit counts as late')
})
