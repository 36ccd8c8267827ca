import t from 'tap'
import { jetstream, jetstreamManager, type JsMsg } from '@nats-io/jetstream'
import { AGG_STREAM, ServiceUser, coreConsumerName } from '../../contracts/mod.ts'
import { edit, publishEdit } from '../helpers/edits.ts'
import { setup } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'
import { partitionsOf } from '../helpers/partitions.ts'

const ACK_WAIT_MS = 2_000
const stack = await setup()
t.teardown(() => stack.cleanup())
await stack.core({ ackWaitMs: ACK_WAIT_MS })
const js = jetstream(await stack.connect())
const jsm = await jetstreamManager(await stack.connect(ServiceUser.Admin))

const committedSeqs = async (docId: string) => (await stack.db.query('SELECT stream_seq FROM op_log WHERE doc_id = $1 ORDER BY stream_seq', [docId])).rows.map((r) => Number(r.stream_seq))

t.test('core - a delivery lost in flight and redelivered behind later committed ones is applied, not skipped', async (t) => {
  await publishEdit(js, 'acme', 'gap-doc', edit('first', 1))
  await until('first edit committed', async () => (await committedSeqs('gap-doc')).length === 1)
  const partition = (await partitionsOf(stack.db, jsm, 'acme', ['gap-doc'])).get('gap-doc')!
  const durable = coreConsumerName(partition)

  // A second puller on the worker's own consumer takes one delivery and never acks it: for the
  // worker that delivery is lost in flight, and JetStream redelivers it after the ack wait.
  const thief = await jetstream(await stack.connect(ServiceUser.Core)).consumers.get(AGG_STREAM, durable)
  let stolen: JsMsg | null = null
  const theft = thief.next({ expires: 30_000 }).then((m) => {
    stolen = m
  })
  let published = 1
  for (let i = 0; stolen === null && i < 10; i++) {
    await publishEdit(js, 'acme', 'gap-doc', edit(`edit ${i} `, 10 + i))
    published++
    await until('edit committed by the worker or taken by the other puller', async () => (await committedSeqs('gap-doc')).length + (stolen ? 1 : 0) === published)
  }
  await theft
  t.ok(stolen, 'one delivery went to the other puller')
  const lost = stolen as unknown as JsMsg

  for (let i = 0; i < 3; i++) await publishEdit(js, 'acme', 'gap-doc', edit(`later ${i} `, 100 + i))
  published += 3
  await until('later edits committed', async () => (await committedSeqs('gap-doc')).length === published - 1)
  t.ok(lost.seq < Math.max(...(await committedSeqs('gap-doc'))), 'the lost delivery is behind committed later ones')

  await until('the lost delivery is applied once redelivered', async () => (await committedSeqs('gap-doc')).includes(lost.seq), 20_000)
  t.equal((await committedSeqs('gap-doc')).length, published, 'every edit committed once')
  const checkpoint = async () => Number((await stack.db.query('SELECT stream_seq FROM consumer_checkpoints WHERE consumer = $1', [`${AGG_STREAM}/${durable}`])).rows[0].stream_seq)
  await until('the checkpoint moves past the gap', async () => (await checkpoint()) >= Math.max(...(await committedSeqs('gap-doc'))), 20_000)
})
