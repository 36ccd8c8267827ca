// An erasure (GDPR) while updates of the document still wait in AGG, or while a core holds the
// document in memory and missed the erased notice: nothing ingested before the erasure may
// come back (core/erasure-watch.ts).
import t from 'tap'
import { join } from 'node:path'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { AGG_STREAM, ServiceUser, editIngestSubject, editMsgId, encodeEnvelope, type DocNotice } from '../../contracts/mod.ts'
import { FsBlobStore } from '../../runtime/blobs/fs-store.ts'
import { eraseDocument, type ErasureStores } from '../../core/erasure.ts'
import { restoreDocument } from '../../core/deletion.ts'
import { docNotifier } from '../helpers/doc-notices.ts'
import { setup, token } from '../helpers/setup.ts'
import { edit, holdAggHead } from '../helpers/edits.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'
import { counterValue } from '../helpers/metric-value.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const blobs = await FsBlobStore.open(mkdtempSync(join(tmpdir(), 'docflow-erasure-backlog-')))
const admin = await stack.connect(ServiceUser.Admin)
const aggJsm = await jetstreamManager(admin)
const js = jetstream(await stack.connect())
const notify = docNotifier(admin)
await holdAggHead(js)
const rows = async (table: string, docId: string) => (await stack.db.query(`SELECT count(*)::int AS n FROM ${table} WHERE tenant = 'acme' AND doc_id = $1`, [docId])).rows[0].n as number
const erase = (docId: string, tell: (notice: DocNotice) => Promise<void>, stores: Partial<ErasureStores> = {}) =>
  eraseDocument({ pool: stack.db, blobs, aggJsm, aggStream: AGG_STREAM, tenantJsm: null, notify: tell, ...stores }, { tenant: 'acme', docId, actor: 'dpo@test', reason: 'GDPR art. 17' })

t.test('core - a core that missed the erased notice drops its copy and the updates ingested before the erasure; nothing applies while the document stays deleted, later ones after a restore', async (t) => {
  const core = await stack.core({ blobs, compactEveryOps: 1, erasurePollMs: 200 })
  t.teardown(() => core.stop())
  const publish = (text: string, clientID: number, ingestTs: number) => {
    const update = edit(text, clientID)
    return js.publish(editIngestSubject('acme', 'missed'), encodeEnvelope({ v: 1, tenant: 'acme', docId: 'missed', userId: 'u', update, ingestTs, edgeId: 'test' }), { msgID: editMsgId('acme', 'missed', update) })
  }
  await publish('kept in memory ', 1, Date.now())
  await until('materialized and cached', async () => (await rows('docs', 'missed')) === 1, 30_000)
  const before = Date.now()
  await erase('missed', async () => {}) // the notice never reaches core
  await publish('ingested before the erasure', 2, before)
  // An erased document stays deleted: an update sent past the edges (which refuse it) is not
  // stored. Ingested past the erasure watch's grace (it drops what came up to 5 s after it).
  await publish('while deleted', 3, Date.now() + 10_000)
  // Dropped by the erasure watch (when it has polled) or fenced out by the commit (migration 011).
  const dropped = async () => (await counterValue(core.core.metrics.updates, { outcome: 'erased' })) + (await counterValue(core.core.metrics.updates, { outcome: 'fenced' }))
  await until('both updates dropped', async () => (await dropped()) === 2)
  t.equal(await rows('op_log', 'missed'), 0, 'nothing stored while the document is deleted')
  t.equal(await rows('docs', 'missed'), 0, 'no state written back from the core\'s memory')
  await restoreDocument(stack.db, { tenant: 'acme', docId: 'missed', actor: 'dpo@test', reason: 'restore the empty document' })
  await publish('after the restore', 4, Date.now() + 10_000)
  await until('the update after the restore is committed', async () => (await rows('op_log', 'missed')) === 1)
  const state = (await stack.db.query<{ state: Buffer }>("SELECT state FROM docs WHERE tenant = 'acme' AND doc_id = 'missed'")).rows[0]?.state
  t.ok(state, 'the later update made a state')
  t.notOk(state!.includes(Buffer.from('kept in memory')), 'without the erased content the core held in memory')
  t.notOk(state!.includes(Buffer.from('ingested before')), 'or the update ingested before the erasure')
  t.notOk(state!.includes(Buffer.from('while deleted')), 'or the one sent while it was deleted')
  t.equal(await dropped(), 2, 'and nothing else dropped')
})

t.test('core - socket edits waiting in AGG when their document is erased are never applied once core is back', async (t) => {
  const core = await stack.core({ blobs, snapshotIntervalMs: 1 })
  const edge = await stack.edge()
  t.teardown(() => edge.stop())
  const tok = await token({ tenant: 'acme' })
  const writer = yclient(edge.url, 'secret', tok)
  t.teardown(() => writer.destroy())
  await writer.synced()
  writer.text.insert(0, 'first ')
  await until('materialized', async () => (await materializedText(core.url, 'secret', tok)) === 'first ')
  await core.stop() // down or behind: the next edit waits in AGG, in a partition batch the erasure's purge cannot match
  const aggBefore = (await aggJsm.streams.info(AGG_STREAM)).state.last_seq
  writer.text.insert(6, 'SSN 078-05-1120')
  await until('the edit is in AGG', async () => (await aggJsm.streams.info(AGG_STREAM)).state.last_seq > aggBefore)
  await erase('secret', notify)
  t.equal(await rows('op_log', 'secret'), 0, 'erased')

  const back = await stack.core({ blobs, snapshotIntervalMs: 1 })
  t.teardown(() => back.stop())
  await until('core dropped the waiting edit', async () => (await counterValue(back.core.metrics.updates, { outcome: 'erased' })) >= 1)
  await back.core['snapshots'].flush()
  for (const table of ['op_log', 'docs', 'snapshots']) t.equal(await rows(table, 'secret'), 0, `no ${table} row of the erased document`)
  const left: string[] = []
  for await (const k of blobs.list('snapshots/acme/secret/')) left.push(k)
  t.same(left, [], 'no snapshot blob of it')
  t.equal(await rows('dead_letters', 'secret'), 0, 'and no dead letter holding its bytes')
})

t.test("core - an erasure that failed at its AGG step deletes, when run again, the socket edits' messages its first run read from the rows it removed", async (t) => {
  const core = await stack.core({ blobs })
  t.teardown(() => core.stop())
  const edge = await stack.edge()
  t.teardown(() => edge.stop())
  const tok = await token({ tenant: 'acme' })
  const writer = yclient(edge.url, 'rerun', tok)
  t.teardown(() => writer.destroy())
  await writer.synced()
  writer.text.insert(0, 'IBAN DE89 3704 0044 0532 0130 00')
  await until('materialized', async () => (await materializedText(core.url, 'rerun', tok)) === 'IBAN DE89 3704 0044 0532 0130 00')
  // Socket edits travel in partition batches: only their sequences, read from the rows, find them.
  const seqs = (await stack.db.query("SELECT DISTINCT stream_seq::int AS s FROM op_log WHERE tenant = 'acme' AND doc_id = 'rerun'")).rows.map((r) => r.s as number)
  const inAgg = async () => (await Promise.all(seqs.map((seq) => aggJsm.streams.getMessage(AGG_STREAM, { seq }).then((m) => (m ? 1 : 0), () => 0)))).reduce((a: number, b: number) => a + b, 0)
  t.equal(await inAgg(), seqs.length, `AGG holds the edit's ${seqs.length} message(s)`)
  // NATS goes away at the first delete: the run fails after the rows went.
  const streams = new Proxy(aggJsm.streams, {
    get: (target, key) => (key === 'deleteMessage' ? () => Promise.reject(new Error('NATS away')) : Reflect.get(target, key, target)),
  })
  const failing = new Proxy(aggJsm, { get: (target, key) => (key === 'streams' ? streams : Reflect.get(target, key, target)) })
  await t.rejects(erase('rerun', notify, { aggJsm: failing }), /NATS away/, 'the first run fails at its AGG step')
  t.equal(await rows('op_log', 'rerun'), 0, 'after the rows went')
  t.equal(await inAgg(), seqs.length, 'the messages stay')
  const report = await erase('rerun', notify)
  t.equal(await inAgg(), 0, 'the run again deleted them')
  t.match(report.streams.find((s) => s.stream === AGG_STREAM), { removed: seqs.length })
  t.equal((await stack.db.query("SELECT count(*)::int AS n FROM erasure_pending_messages WHERE tenant = 'acme' AND doc_id = 'rerun'")).rows[0].n, 0, 'nothing is left pending')
})
