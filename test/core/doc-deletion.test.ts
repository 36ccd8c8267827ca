import t from 'tap'
import { join } from 'node:path'
import * as Y from 'yjs'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { AGG_STREAM, CloseCode, DocEvent, ServiceUser, docEditSubjects, editIngestSubject, editMsgId, encodeEnvelope, snapshotKey, tenantStreamName } from '../../contracts/mod.ts'
import { FsBlobStore } from '../../runtime/blobs/fs-store.ts'
import { deleteDocument, restoreDocument } from '../../core/deletion.ts'
import { eraseDocument } from '../../core/erasure.ts'
import { edit, publishEdit } from '../helpers/edits.ts'
import { docNotifier } from '../helpers/doc-notices.ts'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, readState, until, yclient } from '../helpers/client.ts'
import { counterValue } from '../helpers/metric-value.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const js = jetstream(await stack.connect())
const admin = await stack.connect(ServiceUser.Admin)
const aggJsm = await jetstreamManager(admin)
const notify = docNotifier(admin)
/** `p`, or a rejection naming `what` after `ms` (a socket that is never closed fails fast). */
const within = <T>(p: Promise<T>, what: string, ms = 10_000) =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms).unref())])
const rows = async (table: 'op_log' | 'docs' | 'snapshots', docId: string) => (await stack.db.query(`SELECT count(*)::int AS n FROM ${table} WHERE tenant = 'acme' AND doc_id = $1`, [docId])).rows[0].n as number

t.test('core - a deleted document is hidden (read API 404, edges close it with 4410) and a restore shows it whole', async (t) => {
  const core = await stack.core()
  t.teardown(() => core.stop())
  const edge = await stack.edge()
  t.teardown(() => edge.stop())
  const tok = await token({ tenant: 'acme' })
  const writer = yclient(edge.url, 'hidden', tok)
  t.teardown(() => writer.destroy())
  await writer.synced()
  writer.text.insert(0, 'kept through delete')
  await until('materialized', async () => (await materializedText(core.url, 'hidden', tok)) === 'kept through delete')
  // The room's look at core after opening is over (its load and its resync): only the notice can close it now.
  await until('room load and resync answered', async () => (await counterValue(core.core.metrics.stateRequests)) >= 2)

  const closed = writer.nextClose()
  const record = await deleteDocument(stack.db, { tenant: 'acme', docId: 'hidden', actor: 'ops@test', reason: 'user asked' })
  t.match(record, { action: 'delete', actor: 'ops@test', reason: 'user asked' })
  await notify({ tenant: 'acme', docId: 'hidden', event: DocEvent.Deleted })
  t.equal((await within(closed, 'open socket closed')).code, CloseCode.DocumentDeleted, 'the open socket is closed with 4410 (stock clients stop retrying)')
  t.equal(await readState(core.url, 'hidden', tok), 404, 'state answers 404')
  const history = await fetch(`${core.url}/v1/docs/hidden/history`, { headers: { authorization: `Bearer ${tok}` } })
  t.equal(history.status, 404, 'history answers 404')

  const late = yclient(edge.url, 'hidden', tok)
  t.teardown(() => late.destroy())
  t.equal((await within(late.nextClose(), 'new socket refused')).code, CloseCode.DocumentDeleted, 'a new socket is refused with 4410 (core answers "deleted")')
  late.destroy()
  t.match(await deleteDocument(stack.db, { tenant: 'acme', docId: 'hidden', actor: 'ops@test', reason: 'again' }).catch((e: unknown) => e), { name: 'DocDeletionError', kind: 'already-deleted' })

  await restoreDocument(stack.db, { tenant: 'acme', docId: 'hidden', actor: 'ops@test', reason: 'mistake' })
  await notify({ tenant: 'acme', docId: 'hidden', event: DocEvent.Restored })
  t.equal(await materializedText(core.url, 'hidden', tok), 'kept through delete', 'restored whole')
  const again = yclient(edge.url, 'hidden', tok)
  t.teardown(() => again.destroy())
  await again.synced()
  await until('a new socket gets the document', () => again.text.toString() === 'kept through delete')
  const history2 = (await stack.db.query("SELECT action, actor, reason FROM doc_deletions WHERE tenant = 'acme' AND doc_id = 'hidden' ORDER BY id")).rows
  t.same(history2, [{ action: 'delete', actor: 'ops@test', reason: 'user asked' }, { action: 'restore', actor: 'ops@test', reason: 'mistake' }], 'the history keeps who and why')
  await t.rejects(stack.db.query("UPDATE doc_deletions SET reason = 'x'"), /append-only/, 'the history is append-only')
  t.match(await restoreDocument(stack.db, { tenant: 'acme', docId: 'hidden', actor: 'ops@test', reason: 'x' }).catch((e: unknown) => e), { kind: 'not-deleted' })
  t.match(await deleteDocument(stack.db, { tenant: 'acme', docId: 'never-was', actor: 'ops@test', reason: 'x' }).catch((e: unknown) => e), { kind: 'not-found' })
  again.destroy()
  writer.destroy()
})

t.test('core - an erased document is gone everywhere, and a core that had it in memory does not write it back', async (t) => {
  // Ops stay uncompacted (compactEveryOps far) until their age: the core holds them in memory only.
  const core = await stack.core({ compactEveryOps: 1_000, compactAfterMs: 3_000, snapshotIntervalMs: 1 })
  t.teardown(() => core.stop())
  const edge = await stack.edge()
  t.teardown(() => edge.stop())
  const tok = await token({ tenant: 'acme' })
  const blobs = await FsBlobStore.open(join(stack.dir, 'blobs'))
  // One update over HTTP-ingest's subject (its own message), the rest from a socket (partition batches).
  await publishEdit(js, 'acme', 'secret', edit('secret one ', 900))
  await until('first edit committed', async () => (await rows('op_log', 'secret')) === 1)
  await until('a snapshot of the new document', async () => (await rows('snapshots', 'secret')) === 1)
  const writer = yclient(edge.url, 'secret', tok)
  t.teardown(() => writer.destroy())
  await writer.synced()
  writer.text.insert(0, 'secret two ')
  await until('socket edit committed', async () => (await rows('op_log', 'secret')) >= 2)
  await until('room load and resync answered', async () => (await counterValue(core.core.metrics.stateRequests)) >= 2)
  const seqs = (await stack.db.query("SELECT stream_seq::int AS s FROM op_log WHERE tenant = 'acme' AND doc_id = 'secret'")).rows.map((r) => r.s as number)
  const closed = writer.nextClose()

  const report = await eraseDocument(
    { pool: stack.db, blobs, aggJsm, aggStream: AGG_STREAM, tenantJsm: await jetstreamManager(await stack.connect({ tenant: 'acme', kind: 'admin' })), notify },
    { tenant: 'acme', docId: 'secret', actor: 'dpo@test', reason: 'GDPR art. 17' },
  )
  t.equal((await within(closed, 'open socket closed')).code, CloseCode.DocumentDeleted, 'the open socket is closed with 4410')
  t.ok(report.markedDeleted, 'the erasure deleted the document first')
  t.match(report.rowsRemoved, { op_log: seqs.length, snapshots: 1 })
  t.ok(report.snapshotBlobsDeleted >= 1, 'snapshot blobs deleted')
  for (const table of ['op_log', 'docs', 'snapshots'] as const) t.equal(await rows(table, 'secret'), 0, `no ${table} rows`)
  const left: string[] = []
  for await (const key of blobs.list(snapshotKey('acme', 'secret', 1).replace(/[^/]+$/, ''))) left.push(key)
  t.same(left, [], 'no snapshot blob left')
  const audit = (await stack.db.query("SELECT actor, reason FROM erasures WHERE tenant = 'acme' AND doc_id = 'secret'")).rows
  t.same(audit, [{ actor: 'dpo@test', reason: 'GDPR art. 17' }], 'audited: who and why')
  const agg = report.streams.find((s) => s.stream === AGG_STREAM)!
  t.equal(agg.removed, seqs.length, 'every AGG message that carried its updates is gone')
  for (const seq of seqs) t.equal(await aggJsm.streams.getMessage(AGG_STREAM, { seq }).catch(() => null), null, `AGG seq ${seq} deleted`)
  const aggLeft = await aggJsm.streams.info(AGG_STREAM, { subjects_filter: docEditSubjects('acme', 'secret') })
  t.same(aggLeft.state.subjects ?? {}, {}, 'nothing of the document under its subjects in AGG')
  const tenantStream = report.streams.find((s) => s.stream === tenantStreamName('acme'))!
  // Tenant streams deny purges and deletes (provisioning; JetStream cannot lift it): reported, left to max_age.
  t.match(tenantStream, { removed: 0, kept: /not permitted.*max_age/ }, 'the tenant stream says what it kept and why')
  t.equal(await readState(core.url, 'secret', tok), 404, 'read API: 404')

  // The core had 'secret two' in memory, uncompacted: its age compaction would write the state back.
  // Wait for a later age compaction (of another document) to prove the timer ran past it.
  const before = await counterValue(core.core.metrics.ageCompactions)
  await publishEdit(js, 'acme', 'other', edit('other one ', 901))
  await publishEdit(js, 'acme', 'other', edit('other two ', 902))
  await until('another document compacted by age', async () => (await counterValue(core.core.metrics.ageCompactions)) > before, 20_000)
  t.equal(await rows('docs', 'secret'), 0, 'no state written back')
  t.equal(await rows('op_log', 'secret'), 0, 'no op-log rows written back')
  t.ok((await counterValue(core.core.metrics.docsForgotten)) >= 1, 'core dropped it on the notice')

  const reader = new Y.Doc()
  t.equal(await readState(core.url, 'secret', tok), 404, 'still hidden (erased documents stay deleted)')
  reader.destroy()
  writer.destroy()
})

t.test('core - an erased document\'s snapshot still waiting in the paced queue is never written', async (t) => {
  // Every batch compacts and a snapshot is due at once, but one is written per 5 s: the second waits.
  const core = await stack.core({ compactEveryOps: 1, snapshotIntervalMs: 1, snapshotsPerSecond: 0.2 })
  t.teardown(() => core.stop())
  const blobs = await FsBlobStore.open(join(stack.dir, 'blobs'))
  await publishEdit(js, 'acme', 'paced-first', edit('unrelated', 700))
  await until('first snapshotted', async () => (await rows('snapshots', 'paced-first')) === 1)
  await publishEdit(js, 'acme', 'paced-secret', edit('SSN 078-05-1120', 701))
  await until('secret committed and compacted', async () => (await rows('docs', 'paced-secret')) === 1)
  t.equal(await rows('snapshots', 'paced-secret'), 0, 'its snapshot waits in the queue')
  await eraseDocument({ pool: stack.db, blobs, aggJsm, aggStream: AGG_STREAM, tenantJsm: null, notify }, { tenant: 'acme', docId: 'paced-secret', actor: 'dpo@test', reason: 'GDPR art. 17' })
  // Past the queued snapshot's turn (5 s after the first).
  await new Promise((resolve) => setTimeout(resolve, 6_000))
  t.equal(await rows('snapshots', 'paced-secret'), 0, 'no snapshot row written back')
  const keys: string[] = []
  for await (const key of blobs.list(snapshotKey('acme', 'paced-secret', 1).replace(/[^/]+$/, ''))) keys.push(key)
  t.same(keys, [], 'no snapshot blob written back')
})

t.test('core - erasing a document leaves the snapshots of a longer id whose blob path continues its own', async (t) => {
  const blobs = await FsBlobStore.open(join(stack.dir, 'blobs'))
  const short = 'Q'.repeat(66) // 66 × "~51": one 198-character key segment
  const long = 'Q'.repeat(67) // "<short's segment>/~51"
  t.ok(snapshotKey('acme', long, 7).startsWith(snapshotKey('acme', short, 7).replace(/[^/]+$/, '')), 'the long id\'s key is under the short id\'s folder')
  const longKey = snapshotKey('acme', long, 7)
  const shortKey = snapshotKey('acme', short, 3)
  for (const key of [longKey, shortKey]) await blobs.put(key, new Uint8Array([0, 0]))
  const report = await eraseDocument({ pool: stack.db, blobs, aggJsm, aggStream: AGG_STREAM, tenantJsm: null, notify: async () => {} }, { tenant: 'acme', docId: short, actor: 'dpo@test', reason: 'erase the short id only' })
  t.equal(report.snapshotBlobsDeleted, 1, 'one blob erased, counted for the short id')
  t.equal(await blobs.get(shortKey), null, 'the short id\'s snapshot is gone')
  t.not(await blobs.get(longKey), null, 'the long id\'s snapshot stays')
})

t.test('core - an edit accepted before a delete is stored when core catches up, and a restore shows it; one that came after is not, nor its state', async (t) => {
  let core = await stack.core({ compactEveryOps: 1 })
  const textOf = async () => {
    const doc = new Y.Doc()
    const state = (await stack.db.query<{ state: Buffer }>("SELECT state FROM docs WHERE tenant = 'acme' AND doc_id = 'catch-up'")).rows[0]?.state
    if (state) Y.applyUpdate(doc, state)
    return doc.getText('t').toString()
  }
  await publishEdit(js, 'acme', 'catch-up', edit('hello ', 31))
  await until('first edit committed', async () => (await textOf()) === 'hello ')
  await core.stop() // core behind: the next edits wait in JetStream
  await publishEdit(js, 'acme', 'catch-up', edit('world', 32)) // accepted before the delete
  await deleteDocument(stack.db, { tenant: 'acme', docId: 'catch-up', actor: 'ops@test', reason: 'ticket 12' })
  // Sent past the edges (an HTTP POST; edges close a deleted document's sockets) once it is deleted.
  const late = edit('!', 33)
  await js.publish(editIngestSubject('acme', 'catch-up'), encodeEnvelope({ v: 1, tenant: 'acme', docId: 'catch-up', userId: 'u', update: late, ingestTs: Date.now() + 10_000, edgeId: 'test' }), { msgID: editMsgId('acme', 'catch-up', late) })
  core = await stack.core({ compactEveryOps: 1 })
  t.teardown(() => core.stop())
  await until('the late edit fenced', async () => (await counterValue(core.core.metrics.updates, { outcome: 'fenced' })) === 1, 20_000)
  t.equal(await rows('op_log', 'catch-up'), 2, 'the edit accepted before the delete is in the op log, the late one not')
  t.notOk((await textOf()).includes('!'), 'and no state holds the late one')
  await restoreDocument(stack.db, { tenant: 'acme', docId: 'catch-up', actor: 'ops@test', reason: 'deleted by mistake' })
  t.equal(await materializedText(core.url, 'catch-up', await token({ tenant: 'acme' })), 'hello world', 'the restore shows everything it had')
})
