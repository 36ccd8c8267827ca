// What an erasure accepts: a document with anything stored of it (rows, deletion history, a
// snapshot blob without its row, a single-update message waiting in AGG) is erased; an id with
// nothing is refused before the deletion mark, which would hide that id for good. And the
// progress of its one-request-per-item steps (core/erasure.ts).
import t from 'tap'
import { join } from 'node:path'
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { AGG_STREAM, ServiceUser, docEditSubjects, docSnapshotsPrefix, hasSnapshotKeys, snapshotKey } from '../../contracts/mod.ts'
import { FsBlobStore } from '../../runtime/blobs/fs-store.ts'
import { deleteDocument, restoreDocument } from '../../core/deletion.ts'
import { eraseDocument, type ErasureProgress, type ErasureStores } from '../../core/erasure.ts'
import { isDocDeletionError } from '../../core/errors.ts'
import { migrate } from '../../core/migrate.ts'
import { edit, publishEdit } from '../helpers/edits.ts'
import { setup } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'
import { counterValue } from '../helpers/metric-value.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const client = await stack.db.connect()
await migrate(client)
client.release()
const blobs = await FsBlobStore.open(mkdtempSync(join(tmpdir(), 'docflow-erasure-existence-')))
const aggJsm = await jetstreamManager(await stack.connect(ServiceUser.Admin))
const js = jetstream(await stack.connect())
const stores = (more: Partial<ErasureStores> = {}): ErasureStores => ({ pool: stack.db, blobs, aggJsm, aggStream: AGG_STREAM, tenantJsm: null, notify: async () => {}, ...more })
const change = (docId: string) => ({ tenant: 'acme', docId, actor: 'dpo@test', reason: 'GDPR art. 17' })
const count = async (table: string, docId: string) => (await stack.db.query(`SELECT count(*)::int AS n FROM ${table} WHERE tenant = 'acme' AND doc_id = $1`, [docId])).rows[0].n as number
const addOp = (docId: string, seq: number) =>
  stack.db.query("INSERT INTO op_log (tenant, doc_id, stream_seq, msg_id, user_id, edge_id, update, status, ingest_ts) VALUES ('acme', $1, $2, $3, 'u', 'e', $4, 'applied', now())", [docId, seq, `m-${docId}-${seq}`, Buffer.from(edit('x', 7))])
/** Publishes `n` single-update messages of the document as an edge does; resolves with their AGG sequences once AGG holds them. */
async function inAgg(docId: string, n: number): Promise<number[]> {
  const before = (await aggJsm.streams.info(AGG_STREAM)).state.last_seq
  for (let i = 0; i < n; i++) await publishEdit(js, 'acme', docId, edit(`edit ${i}`, 1_000 + i))
  await until(`${n} messages of ${docId} in AGG`, async () => (await aggJsm.streams.info(AGG_STREAM)).state.last_seq >= before + n)
  return Array.from({ length: n }, (_, i) => before + 1 + i)
}

// First: a core started after an erasure deleted AGG messages finds a hole in the partitions it never read (core/streams.ts findHole).
t.test('core - a document whose id encodes too long for a snapshot key erases, and takes no snapshot', async (t) => {
  const docId = '議事録'.repeat(40) // 120 characters, 9 bytes each in a blob path
  t.notOk(hasSnapshotKeys('acme', docId), 'no snapshot key can hold it')
  const core = await stack.core({ blobs, compactEveryOps: 1, snapshotIntervalMs: 1 })
  t.teardown(() => core.stop())
  await publishEdit(js, 'acme', docId, edit('minutes', 5))
  await until('committed and compacted', async () => (await count('docs', docId)) === 1)
  await until('its snapshot counted unkeyable', async () => (await counterValue(core.core.metrics.snapshots, { outcome: 'unkeyable' })) >= 1)
  t.equal(await counterValue(core.core.metrics.snapshots, { outcome: 'failed' }), 0, 'no snapshot failed')
  const report = await eraseDocument(stores(), change(docId))
  t.equal(report.rowsRemoved.op_log, 1, 'its op log erased')
  t.equal(await count('docs', docId), 0, 'and its state')
})

t.test('core - erasing an id with nothing stored is refused and leaves no deletion mark', async (t) => {
  const err = await eraseDocument(stores(), change('never-written')).then(() => null, (e: unknown) => e)
  t.ok(isDocDeletionError(err), `refused (${String(err)})`)
  t.match(err, { kind: 'not-found', message: 'tenant acme has no document never-written' })
  t.equal(await count('doc_deletions', 'never-written'), 0, 'not marked deleted: later edits of this id stay visible')
  t.equal(await count('erasures', 'never-written'), 0, 'no erasure recorded')
})

t.test('core - erasing a document stored only as a snapshot blob or an uncommitted AGG message erases it', async (t) => {
  const key = snapshotKey('acme', 'blob-only', 3)
  await blobs.put(key, edit('left behind', 7))
  const fromBlob = await eraseDocument(stores(), change('blob-only'))
  t.ok(fromBlob.markedDeleted, 'marked deleted')
  t.equal(fromBlob.snapshotBlobsDeleted, 1)
  t.equal(await blobs.get(key), null, 'the blob whose row never landed is gone')
  // A put a crash cut short leaves its temp file (runtime/blobs/fs-store.ts), content no key names.
  const folder = join(blobs.location, ...docSnapshotsPrefix('acme', 'crashed-put').split('/'))
  await blobs.put(snapshotKey('acme', 'crashed-put', 1), edit('snapshot', 7))
  writeFileSync(join(folder, '.0000000000000999.ydoc.0123456789ab.tmp'), 'half a snapshot')
  t.equal((await eraseDocument(stores(), change('crashed-put'))).snapshotBlobsDeleted, 2, 'the blob and the leftover')
  t.notOk(existsSync(folder), 'no folder named after it is left')

  await inAgg('agg-only', 1)
  const fromAgg = await eraseDocument(stores(), change('agg-only'))
  t.ok(fromAgg.markedDeleted, 'marked deleted: edges refuse it, core drops what it gets of it')
  t.equal(fromAgg.streams.find((s) => s.stream === AGG_STREAM)?.removed, 1, 'its waiting message purged')
  t.same((await aggJsm.streams.info(AGG_STREAM, { subjects_filter: docEditSubjects('acme', 'agg-only') })).state.subjects ?? {}, {})
})

t.test('core - an erasure rerun after its rows went, or of an erased and restored document, finishes', async (t) => {
  // A first run that stopped after removing the rows: deleted, nothing left in PostgreSQL.
  await addOp('half-erased', 1)
  await deleteDocument(stack.db, { ...change('half-erased'), reason: 'erase: first run' })
  await stack.db.query("BEGIN; SELECT docflow_erase('acme', 'half-erased', 'first run', 'dpo@test'); COMMIT")
  const rerun = await eraseDocument(stores(), change('half-erased'))
  t.notOk(rerun.markedDeleted, 'it was deleted already')
  t.equal(await count('erasures', 'half-erased'), 2, 'audited again')

  await restoreDocument(stack.db, change('half-erased'))
  const again = await eraseDocument(stores(), change('half-erased'))
  t.ok(again.markedDeleted, 'an erased and restored (empty) document can be erased again')
})

t.test('core - an erasure reports how far it is in deleting AGG messages one by one', async (t) => {
  const seqs = await inAgg('many-messages', 20)
  for (const seq of seqs) await addOp('many-messages', seq)
  const every: ErasureProgress[] = []
  const report = await eraseDocument(stores({ progress: (p) => every.push(p), progressIntervalMs: 0 }), change('many-messages'))
  t.equal(report.streams.find((s) => s.stream === AGG_STREAM)?.removed, 20)
  t.same(
    every.filter((p) => p.step === 'agg-messages').map((p) => p.done),
    Array.from({ length: 20 }, (_, i) => i + 1),
    'each message, up to all of them',
  )
  t.ok(every.every((p) => p.step === 'agg-messages' && p.total === 20), 'out of the messages the op log named')

  const quick = await inAgg('few-messages', 2)
  for (const seq of quick) await addOp('few-messages', seq)
  const seen: ErasureProgress[] = []
  await eraseDocument(stores({ progress: (p) => seen.push(p) }), change('few-messages'))
  t.same(seen, [], 'a step shorter than the interval reports nothing')
})
