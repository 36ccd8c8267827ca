// A delivery lost in flight and redelivered behind later committed ones (the case
// test/core/contiguity.test.ts covers for the op log) commits its op-log row AFTER rows with
// higher stream sequences: "every row with stream_seq <= S is in the state tagged S" does not
// hold, so states are tagged with the highest sequence they hold and snapshots with the op-log
// id they hold rows through (point-in-time replays the rows past it up to the sequence asked).
import t from 'tap'
import * as Y from 'yjs'
import { join } from 'node:path'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { jetstream, jetstreamManager, type JsMsg } from '@nats-io/jetstream'
import { AGG_STREAM, LAST_SEQ_HEADER, ServiceUser, coreConsumerName, snapshotKey } from '../../contracts/mod.ts'
import { FsBlobStore } from '../../runtime/blobs/fs-store.ts'
import { readStateAt } from '../../core/point-in-time.ts'
import { edit, publishEdit } from '../helpers/edits.ts'
import { setup, token } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'
import { partitionsOf } from '../helpers/partitions.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const blobs = await FsBlobStore.open(mkdtempSync(join(tmpdir(), 'docflow-rd-')))
const core = await stack.core({ blobs, ackWaitMs: 2_000, compactEveryOps: 1, snapshotIntervalMs: 1 })
const js = jetstream(await stack.connect())
const jsm = await jetstreamManager(await stack.connect(ServiceUser.Admin))
const DOC = 'gap-doc'
const rows = async () => (await stack.db.query<{ stream_seq: string; update: Buffer }>('SELECT stream_seq, update FROM op_log WHERE doc_id = $1 ORDER BY id', [DOC])).rows.map((r) => ({ seq: Number(r.stream_seq), update: r.update }))
const textOf = (updates: Uint8Array[]) => {
  const d = new Y.Doc()
  for (const u of updates) Y.applyUpdate(d, u)
  return d.getText('t').toString()
}

t.test('core - after a redelivery behind later commits, the state tag, state?at= and the last-seq header hold the highest sequence', async (t) => {
  await publishEdit(js, 'acme', DOC, edit('A', 1))
  await until('first committed', async () => (await rows()).length === 1)
  const partition = (await partitionsOf(stack.db, jsm, 'acme', [DOC])).get(DOC)!
  const thief = await jetstream(await stack.connect(ServiceUser.Core)).consumers.get(AGG_STREAM, coreConsumerName(partition))
  let stolen: JsMsg | null = null
  const theft = thief.next({ expires: 30_000 }).then((m) => (stolen = m))
  let published = 1
  for (let i = 0; stolen === null && i < 10; i++) {
    await publishEdit(js, 'acme', DOC, edit(`m${i}`, 10 + i))
    published++
    await until('committed or stolen', async () => (await rows()).length + (stolen ? 1 : 0) === published)
  }
  await theft
  const lost = (stolen as unknown as JsMsg).seq
  for (let i = 0; i < 3; i++) await publishEdit(js, 'acme', DOC, edit(`L${i}`, 100 + i))
  published += 3
  await until('later edits committed', async () => (await rows()).length === published - 1)
  await until('lost delivery redelivered and committed', async () => (await rows()).some((r) => r.seq === lost), 30_000)
  await core.core['snapshots'].flush()
  const all = await rows()
  const maxSeq = Math.max(...all.map((r) => r.seq))
  t.comment(`lost seq ${lost}; op-log order by id: ${all.map((r) => r.seq).join(',')}`)
  const snaps = (await stack.db.query('SELECT stream_seq FROM snapshots WHERE doc_id = $1 ORDER BY stream_seq', [DOC])).rows.map((r) => Number(r.stream_seq))
  const docRow = (await stack.db.query('SELECT last_stream_seq FROM docs WHERE doc_id = $1', [DOC])).rows[0]
  t.comment(`snapshots at ${snaps.join(',')}; docs.last_stream_seq ${docRow.last_stream_seq}`)
  t.equal(Number(docRow.last_stream_seq), maxSeq, 'docs.last_stream_seq is the highest sequence the state holds')

  for (const at of [lost, maxSeq]) {
    const expected = textOf(all.filter((r) => r.seq <= at).map((r) => r.update))
    const got = await readStateAt(stack.db, blobs, 'acme', DOC, { seq: at })
    t.equal(got && textOf([got.update]), expected, `state at seq ${at} = replay of the op-log rows with stream_seq <= ${at}`)
  }
  const res = await fetch(`${core.url}/v1/docs/${DOC}/state`, { headers: { authorization: `Bearer ${await token({ tenant: 'acme' })}` } })
  t.equal(res.headers.get(LAST_SEQ_HEADER), String(maxSeq), 'the last-seq header names the newest update the document holds')
})

t.test('core - state?at= replays a row committed after its snapshot though its sequence is below the snapshot\'s', async (t) => {
  const doc = 'late-row'
  const updates = new Map<number, Uint8Array>([1, 2, 3, 5, 6, 7, 4].map((seq) => [seq, edit(`s${seq} `, 500 + seq)]))
  const insert = async (seq: number) =>
    (await stack.db.query<{ id: string }>(
      `INSERT INTO op_log (tenant, doc_id, stream_seq, msg_id, user_id, edge_id, update, status, ingest_ts) VALUES ('acme', $1, $2, $3, 'u', 'seed', $4, 'applied', now()) RETURNING id`,
      [doc, 9_000 + seq, `late-${seq}`, updates.get(seq)],
    )).rows[0]!.id
  let through = ''
  for (const seq of [1, 2, 3, 5, 6, 7]) through = await insert(seq)
  // The state of everything committed so far, snapshotted as the highest sequence it holds.
  const key = snapshotKey('acme', doc, 9_007)
  await blobs.put(key, Y.mergeUpdates([1, 2, 3, 5, 6, 7].map((s) => updates.get(s)!)))
  await stack.db.query(`INSERT INTO snapshots (tenant, doc_id, stream_seq, last_ingest_ts, blob_key, bytes, through_op_id) VALUES ('acme', $1, 9007, now(), $2, 1, $3)`, [doc, key, through])
  await insert(4) // the redelivered one, committed last
  const at = async (seq: number) => {
    const got = await readStateAt(stack.db, blobs, 'acme', doc, { seq })
    return got && textOf([got.update])
  }
  t.equal(await at(9_007), textOf([1, 2, 3, 4, 5, 6, 7].map((s) => updates.get(s)!)), 'at 7: the snapshot and the late 4')
  t.equal(await at(9_004), textOf([1, 2, 3, 4].map((s) => updates.get(s)!)), 'at 4: no snapshot holds only what came before, so the rows up to 4')
})
