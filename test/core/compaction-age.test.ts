import t from 'tap'
import { join } from 'node:path'
import { jetstream } from '@nats-io/jetstream'
import { snapshotKey } from '../../contracts/mod.ts'
import { FsBlobStore } from '../../runtime/blobs/fs-store.ts'
import { createCoreMetrics } from '../../core/metrics.ts'
import { createRegistry } from '../../runtime/metrics.ts'
import { createLogger } from '../../runtime/log.ts'
import { SnapshotRetention } from '../../core/snapshot-retention.ts'
import * as Y from 'yjs'
import { BatchBuilder } from '../../core/batch.ts'
import { DocCache } from '../../core/doc-cache.ts'
import { edit, publishEdit } from '../helpers/edits.ts'
import { setup } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'
import { counterValue } from '../helpers/metric-value.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const js = jetstream(await stack.connect())

/** The doc's state row: op-log rows folded into it, and rows after it (the tail a cold load replays). */
const stored = async (docId: string) =>
  (await stack.db.query("SELECT d.op_count::int AS folded, (SELECT count(*)::int FROM op_log o WHERE o.tenant = d.tenant AND o.doc_id = d.doc_id AND o.id > d.through_op_id) AS tail FROM docs d WHERE d.tenant = 'acme' AND d.doc_id = $1", [docId])).rows[0] as { folded: number; tail: number } | undefined
const opRows = async (docId: string) => (await stack.db.query("SELECT count(*)::int AS n FROM op_log WHERE tenant = 'acme' AND doc_id = $1", [docId])).rows[0].n as number

t.test('core - a quiet document has its op-log tail compacted once its oldest uncompacted op is compactAfterMs old', async (t) => {
  const core = await stack.core({ compactEveryOps: 1_000, compactAfterMs: 1_500 })
  for (let i = 0; i < 4; i++) {
    await publishEdit(js, 'acme', 'quiet', edit(`${i} `, 500 + i))
    await until(`edit ${i} committed`, async () => (await opRows('quiet')) === i + 1)
  }
  t.same(await stored('quiet'), { folded: 1, tail: 3 }, 'a new document gets its state at once; the next ops stay a tail (far from compactEveryOps)')
  // No more edits: only the age can fold the tail.
  await until('the tail folded by age', async () => (await stored('quiet'))?.tail === 0, 15_000)
  t.same(await stored('quiet'), { folded: 4, tail: 0 }, 'every op is in the state now')
  t.ok((await counterValue(core.core.metrics.ageCompactions)) >= 1, 'counted as an age compaction')
  await core.stop()
})

t.test('core - a batch also writes the state of an aged document it did not touch (so steady traffic elsewhere does not starve it)', async (t) => {
  const cache = new DocCache({ maxDocs: 10, compactAfterMs: 50 })
  const quiet = cache.add('acme', 'aged', null)
  quiet.compacted = true
  Y.applyUpdate(quiet.doc, edit('hello', 1))
  cache.committedOps(quiet, 3, 30, 42, Date.now())
  const batch = () => new BatchBuilder('AGG', cache, async () => null, createCoreMetrics(createRegistry('core', false)), 1_000)
  t.same(batch().docRows(), [], 'not aged yet')
  await until('aged', () => cache.isAged(quiet))
  const b = batch()
  const rows = b.docRows()
  t.same(rows.map((r) => ({ docId: r.docId, lastStreamSeq: r.lastStreamSeq, ops: r.ops })), [{ docId: 'aged', lastStreamSeq: 42, ops: 3 }], 'its state, tagged with its last committed sequence, folding its 3 ops')
  const doc = new Y.Doc()
  Y.applyUpdate(doc, rows[0]!.state)
  t.equal(doc.getText('t').toString(), 'hello')
  b.committed()
  t.equal(quiet.uncompacted, 0, 'nothing uncompacted after the commit')
  t.same(cache.aged(10), [], 'no longer due')
})

t.test('core - snapshots past the retention are deleted, row and blob, the newest of each document kept', async (t) => {
  const blobs = await FsBlobStore.open(join(stack.dir, 'retention-blobs'))
  const metrics = createCoreMetrics(createRegistry('core', false))
  const retention = new SnapshotRetention(blobs, stack.db, createLogger('test', 'silent'), metrics, { retentionDays: 90, batchSize: 2 })
  const day = 86_400_000
  // doc "old": three snapshots, all older than 90 days; doc "mixed": one old, one recent.
  const snapshots = [
    { doc: 'old', seq: 1, ageDays: 200 },
    { doc: 'old', seq: 2, ageDays: 150 },
    { doc: 'old', seq: 3, ageDays: 100 },
    { doc: 'mixed', seq: 4, ageDays: 91 },
    { doc: 'mixed', seq: 5, ageDays: 10 },
  ]
  for (const s of snapshots) {
    const key = snapshotKey('globex', s.doc, s.seq)
    await blobs.put(key, new Uint8Array([0, 0]))
    await stack.db.query('INSERT INTO snapshots (tenant, doc_id, stream_seq, last_ingest_ts, blob_key, bytes, taken_at) VALUES ($1, $2, $3, $4, $5, 2, $4)', ['globex', s.doc, s.seq, new Date(Date.now() - s.ageDays * day), key])
  }
  const pruned = await retention.pruneOnce()
  t.same(pruned, { rows: 3, blobs: 3 }, 'old seq 1 and 2, mixed seq 4: all in one round, two at a time')
  const rows = (await stack.db.query("SELECT doc_id, stream_seq::int AS seq FROM snapshots WHERE tenant = 'globex' ORDER BY stream_seq")).rows
  t.same(rows, [{ doc_id: 'old', seq: 3 }, { doc_id: 'mixed', seq: 5 }], 'the newest of "old" stays though past the retention; the recent one stays')
  const keys: string[] = []
  for await (const key of blobs.list('snapshots/globex/')) keys.push(key)
  t.same(keys.sort(), [snapshotKey('globex', 'mixed', 5), snapshotKey('globex', 'old', 3)].sort(), 'their blobs went with the rows')
  t.equal(await counterValue(metrics.snapshotsPruned, { outcome: 'deleted' }), 3)
  t.same(await retention.pruneOnce(), { rows: 0, blobs: 0 }, 'nothing more to prune')
})
