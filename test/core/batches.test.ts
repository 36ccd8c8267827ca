import t from 'tap'
import * as Y from 'yjs'
import { jetstream } from '@nats-io/jetstream'
import { headers } from '@nats-io/transport-node'
import { SAVED_NOTICE_HEADER, ServiceSubjects, ServiceUser, decodeCommittedNotice, editBatchMsgId, editBatchSubject, editPartitionOf, encodeBatch, type CommittedNotice } from '../../contracts/mod.ts'
import { readDocState } from '../../core/store.ts'
import { edit, publishEdit } from '../helpers/edits.ts'
import { setup } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const js = jetstream(await stack.connect())

/** `n` doc ids of `partition`, each starting with `prefix`. */
function docsOf(partition: number, prefix: string, n: number): string[] {
  if (partition >= stack.partitions) throw new Error(`the stack has ${stack.partitions} partitions, not ${partition + 1}`)
  const found: string[] = []
  for (let i = 0; found.length < n; i++) if (editPartitionOf(`${prefix}-${i}`, stack.partitions) === partition) found.push(`${prefix}-${i}`)
  return found
}
const opRows = async (docIds: string[]) => (await stack.db.query('SELECT count(*)::int AS n FROM op_log WHERE doc_id = ANY($1)', [docIds])).rows[0].n as number
const textOf = async (docId: string) => {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, (await readDocState(stack.db, 'acme', docId))!)
  return doc.getText('t').toString()
}

t.test('core - each update of a batch message is applied and logged; a bad one is dead-lettered alone, by its index, and its edge is told which ones', async (t) => {
  let core = await stack.core()
  const notices: CommittedNotice[] = []
  const edgeNc = await stack.connect(ServiceUser.Edge)
  edgeNc.subscribe(ServiceSubjects.committed('test-edge'), { callback: (err, msg) => void (err || notices.push(decodeCommittedNotice(msg.data))) })
  await edgeNc.flush()
  const [a, b, c] = docsOf(1, 'batch', 3) as [string, string, string]
  const elsewhere = docsOf(2, 'batch-other', 1)[0]!
  const item = (docId: string, update: Uint8Array) => ({ docId, userId: 'u', update, ingestTs: Date.now() })
  const batch = encodeBatch({
    v: 2,
    tenant: 'acme',
    partition: 1,
    edgeId: 'test-edge',
    updates: [item(a, edit('first', 1)), item(b, Uint8Array.from([0xff, 0xff, 0xff])), item(c, edit('third', 3)), item(elsewhere, edit('misfiled', 4)), item(a, edit('again', 5))],
  })
  const msgId = editBatchMsgId('acme', 'test', 1)
  const h = headers()
  h.set(SAVED_NOTICE_HEADER, '1') // a socket that asked for "saved" has an update in it
  const ack = await js.publish(editBatchSubject('acme', 1), batch, { msgID: msgId, headers: h })
  await until('the good updates committed', async () => (await opRows([a, c])) === 3)
  const dead = (await stack.db.query('SELECT item, doc_id, reason FROM dead_letters WHERE stream_seq = $1 ORDER BY item', [ack.seq])).rows
  t.match(dead, [
    { item: 1, doc_id: b, reason: /^apply: / },
    { item: 3, doc_id: elsewhere, reason: /not in partition 1/ },
  ])
  t.equal(dead.length, 2, 'only the bad updates are dead letters')
  t.equal(await opRows([b, elsewhere]), 0)
  t.equal((await textOf(a)).length, 'firstagain'.length, `${a} holds both of its updates`)
  t.equal(await textOf(c), 'third')
  await until('the edge is told', () => notices.length > 0)
  t.same(notices, [{ msgIds: [msgId], refused: [{ msgId, items: [1, 3] }] }], 'committed, but for the two dead-lettered updates')

  // A replay from the start delivers the batch again: each update is found committed, none twice.
  await core.stop()
  await stack.db.query('UPDATE consumer_checkpoints SET stream_seq = 0')
  core = await stack.core()
  await publishEdit(js, 'acme', a, edit('!', 6))
  await until('a later edit committed after the replay', async () => (await opRows([a])) === 3)
  t.equal(await opRows([a, c]), 4, 'no op-log row twice')
  t.equal((await stack.db.query('SELECT count(*)::int AS n FROM dead_letters')).rows[0].n, 2, 'no dead letter twice')
  await core.stop()
})

t.test('core - the batches of many partitions commit together (group commit on the one lease session)', async (t) => {
  const docs = Array.from({ length: stack.partitions }, (_, p) => docsOf(p, 'group', 1)[0]!)
  const core = await stack.core()
  t.teardown(() => core.stop())
  await until('the core leases every partition', async () => (await core.core.metrics.leasesHeld.get()).values[0]?.value === stack.partitions)
  // Rounds of one edit per partition published at once: each round's edits reach their
  // workers within a group-commit window of each other.
  const rounds = 5
  for (let round = 0; round < rounds; round++) {
    await Promise.all(docs.map((docId, i) => publishEdit(js, 'acme', docId, edit(`r${round}p${i}`, 100 + round * 10 + i))))
    await until(`round ${round} committed`, async () => (await opRows(docs)) === docs.length * (round + 1))
  }
  // One doc per partition: the docs a transaction (xmin) wrote are the partitions it committed.
  const r = await stack.db.query('SELECT count(DISTINCT doc_id)::int AS partitions FROM op_log WHERE doc_id = ANY($1) GROUP BY xmin::text ORDER BY 1 DESC', [docs])
  const sizes = r.rows.map((row) => row.partitions as number)
  t.ok(sizes[0]! >= 2, `${rounds} rounds over ${stack.partitions} partitions committed in ${sizes.length} transactions, of ${sizes.join(', ')} partitions each`)
})

t.test('core - a backlog of big batch messages is committed in bounded transactions, not one statement', async (t) => {
  const docs = docsOf(3, 'backlog', 50)
  const messages = 30
  const perMessage = 500
  let clientID = 10_000
  for (let m = 0; m < messages; m++) {
    const updates = Array.from({ length: perMessage }, (_, i) => ({ docId: docs[i % docs.length]!, userId: 'u', update: edit(`m${m}u${i}`, clientID++), ingestTs: Date.now() }))
    await js.publish(editBatchSubject('acme', 3), encodeBatch({ v: 2, tenant: 'acme', partition: 3, edgeId: 'test-edge', updates }), { msgID: editBatchMsgId('acme', 'backlog', m) })
  }
  // Queued while no core runs (the previous test's core stopped): this one starts on the backlog.
  await stack.core()
  await until('the whole backlog committed', async () => (await opRows(docs)) === messages * perMessage, 60_000)
  const r = await stack.db.query('SELECT count(*)::int AS n FROM op_log WHERE doc_id = ANY($1) GROUP BY xmin::text ORDER BY 1 DESC LIMIT 1', [docs])
  t.ok(r.rows[0].n < (messages * perMessage) / 2, `largest transaction: ${r.rows[0].n} of ${messages * perMessage} rows`)
})
