import t from 'tap'
import { jetstreamManager } from '@nats-io/jetstream'
import { decodeEdits, editPartitionOf, tenantStreamName } from '../../contracts/mod.ts'
import { UpdatePublisher, type PublisherOptions } from '../../edge/publisher.ts'
import { isPublishError } from '../../edge/errors.ts'
import { createEdgeMetrics } from '../../edge/metrics.ts'
import { createRegistry } from '../../runtime/metrics.ts'
import { createLogger } from '../../runtime/log.ts'
import { setup } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'
import { counterValue } from '../helpers/metric-value.ts'
import { edit } from '../helpers/edits.ts'

const stack = await setup({ tenants: { acme: 64 * 1024 ** 2, tiny: 128 * 1024 } })
t.teardown(() => stack.cleanup())
const nc = await stack.connect() // the edge's service user, with its inbox prefix

function publisher(opts: Partial<PublisherOptions>) {
  const metrics = createEdgeMetrics(createRegistry('publisher-test', false))
  const p = new UpdatePublisher(nc, 'publisher-test', metrics, createLogger('publisher-test', 'silent'), { partitions: stack.partitions, ...opts })
  t.teardown(() => p.close())
  return { p, metrics }
}

/** `count` document ids that all hash to one partition. */
function docsOfOnePartition(prefix: string, count: number): string[] {
  const partition = editPartitionOf(`${prefix}-0`, stack.partitions)
  const docs: string[] = []
  for (let i = 0; docs.length < count; i++) if (editPartitionOf(`${prefix}-${i}`, stack.partitions) === partition) docs.push(`${prefix}-${i}`)
  return docs
}

async function tenantStream(tenant: string) {
  const jsm = await jetstreamManager(await stack.connect({ tenant, kind: 'admin' }))
  const name = tenantStreamName(tenant)
  return {
    messages: async () => (await jsm.streams.info(name)).state.messages,
    lastSeq: async () => (await jsm.streams.info(name)).state.last_seq,
    get: (seq: number) => jsm.streams.getMessage(name, { seq }),
  }
}

t.test('edge - a lane goes as soon as it holds batchTarget updates, without waiting out its linger', async (t) => {
  const { p } = publisher({ lingerMs: 60_000, batchTarget: 3, busyUpdatesPerS: 0 }) // always busy: lanes linger
  const stream = await tenantStream('acme')
  const before = await stream.messages()
  const docs = docsOfOnePartition('target', 3)
  const started = Date.now()
  const acked = Promise.all(docs.map((docId, i) => p.publish('acme', docId, 'u', edit(`t${i}`, 700 + i))))
  const waited = await Promise.race([acked.then(() => Date.now() - started), new Promise<null>((r) => setTimeout(() => r(null), 10_000))])
  t.ok(waited !== null && waited < 10_000, `three updates acked after ${waited} ms, not after the 60 s linger`)
  t.equal((await stream.messages()) - before, 1, 'in one stream message')
})

t.test('edge - a busy publisher keeps lingering: its own batching never makes it look idle', async (t) => {
  const { p } = publisher({ lingerMs: 60, batchTarget: 10_000, busyUpdatesPerS: 100 })
  const stream = await tenantStream('acme')
  const docs = docsOfOnePartition('busy', 20)
  const update = edit('k', 900)
  const acks: Promise<unknown>[] = []
  let typing = true
  // About 1,000 updates/s into one lane, for as long as the test looks.
  const typist = (async () => {
    for (let i = 0; typing; i++) {
      for (let k = 0; k < 5; k++) acks.push(p.publish('acme', docs[(i * 5 + k) % docs.length]!, 'u', update))
      await new Promise((r) => setTimeout(r, 5))
    }
  })()
  await new Promise((r) => setTimeout(r, 500)) // the rate is known from the first 250 ms window on
  const before = await stream.messages()
  const started = Date.now()
  await new Promise((r) => setTimeout(r, 1_000))
  const messages = (await stream.messages()) - before
  const seconds = (Date.now() - started) / 1000
  typing = false
  await typist
  await Promise.all(acks)
  // One message per 60 ms linger is ~16/s; a rate counted in messages made lingering switch
  // itself off (fewer messages: "idle"), and the lane went at every 5 ms tick every other window.
  t.ok(messages <= 40 * seconds, `${messages} stream messages in ${seconds.toFixed(2)} s: the lane waits out its linger`)
})

t.test('edge - an idle publisher does not linger: a lone update goes at the next tick', async (t) => {
  const { p } = publisher({ lingerMs: 60_000, batchTarget: 100 })
  const started = Date.now()
  const waited = await Promise.race([p.publish('acme', 'lone-typist', 'u', edit('x', 800)).then(() => Date.now() - started), new Promise<null>((r) => setTimeout(() => r(null), 10_000))])
  t.ok(waited !== null && waited < 10_000, `acked after ${waited} ms, not after the 60 s linger`)
})

t.test('edge - updates of several documents of one partition published together go out as one stream message', async (t) => {
  const { p, metrics } = publisher({ lingerMs: 20 })
  const stream = await tenantStream('acme')
  const before = await stream.messages()
  const docs = docsOfOnePartition('batched', 3)
  const updates = docs.map((_, i) => edit(`text ${i}`, 100 + i))
  await Promise.all(docs.map((docId, i) => p.publish('acme', docId, `user-${i}`, updates[i]!)))

  t.equal((await stream.messages()) - before, 1, 'three updates, one stream message')
  const stored = await stream.get(await stream.lastSeq())
  const edits = decodeEdits(stored!.data)
  t.same(
    edits.map((e) => [e.docId, e.userId, Buffer.from(e.update).toString('hex')]),
    docs.map((docId, i) => [docId, `user-${i}`, Buffer.from(updates[i]!).toString('hex')]),
    'every update arrived, in the order published',
  )
  t.equal(await counterValue(metrics.updatesPublished), 3, 'counted per update')
})

t.test('edge - a batch whose ack times out is resent with the same msg id and stored once', async (t) => {
  const { p, metrics } = publisher({ ackTimeoutMs: 300, attempts: 50, lingerMs: 0 })
  const stream = await tenantStream('acme')
  const before = await stream.messages()
  const resume = await stack.pauseNats()
  t.teardown(resume)

  const published = p.publish('acme', 'retried', 'writer', edit('once', 7))
  await until('the batch was resent while nats-server was paused', async () => (await counterValue(metrics.publishRetries)) >= 2)
  resume()
  await published
  // The original and every resend reached the server; dedup stores one. A later publish
  // proves the server got past all of them before we count.
  await p.publish('acme', 'retried-after', 'writer', edit('after', 8))
  t.equal((await stream.messages()) - before, 2, 'the retried batch is stored once (plus the later one)')
})

t.test('edge - a quota refusal rejects each update of the batch with kind quota', async (t) => {
  const { p, metrics } = publisher({ lingerMs: 20 })
  const filler = 'x'.repeat(16 * 1024)
  let full = false
  for (let i = 0; i < 40 && !full; i++) {
    await p.publish('tiny', `filler-${i}`, 'writer', edit(filler, 1_000 + i)).catch((err: unknown) => {
      if (!isPublishError(err) || err.kind !== 'quota') throw err
      full = true
    })
  }
  t.ok(full, 'the tenant ran out of storage')

  // Together larger than the filler that no longer fit.
  const docs = docsOfOnePartition('refused', 3)
  const outcomes = await Promise.allSettled(docs.map((docId, i) => p.publish('tiny', docId, `user-${i}`, edit('y'.repeat(6 * 1024), 200 + i))))
  t.same(
    outcomes.map((o) => (o.status === 'rejected' && isPublishError(o.reason) ? o.reason.kind : o.status)),
    ['quota', 'quota', 'quota'],
    'each writer of the refused batch gets its own quota outcome',
  )
  t.ok((await counterValue(metrics.quotaRejections, { tenant: 'tiny' })) >= 4, 'counted per update, under the tenant')
})

t.test("edge - a document's updates queued behind a batch that failed fail with it, unpublished; other documents' go on", async (t) => {
  const { p } = publisher({ ackTimeoutMs: 300, attempts: 2, lingerMs: 0 })
  const stream = await tenantStream('acme')
  const before = await stream.lastSeq()
  const [failing, other] = docsOfOnePartition('behind', 2)
  const outcome = (published: Promise<unknown>) => published.then(() => 'stored', (err: unknown) => (isPublishError(err) ? err.kind : String(err)))
  const resume = await stack.pauseNats() // connected, but no ack comes: the batch runs out of attempts
  t.teardown(resume)

  const first = outcome(p.publish('acme', failing!, 'writer', edit('first', 11)))
  await new Promise((resolve) => setImmediate(resolve)) // the first goes in flight alone (lingerMs 0)
  const behind = edit('behind', 12)
  const queued = [outcome(p.publish('acme', failing!, 'writer', behind)), outcome(p.publish('acme', other!, 'other', edit('other', 13)))]
  t.equal(await first, 'unavailable', 'the batch runs out of attempts')
  t.equal(await Promise.race([queued[0], Promise.resolve('still queued')]), 'unavailable', 'the update of its document queued behind it fails with it')
  resume()
  t.equal(await queued[1], 'stored', 'the other document of the lane is published')
  const stored = []
  for (let seq = before + 1; seq <= (await stream.lastSeq()); seq++) stored.push(...decodeEdits((await stream.get(seq))!.data))
  t.notOk(
    stored.some((e) => Buffer.from(e.update).equals(behind)),
    'the update behind the failed batch never reached the stream',
  )
})

t.test('edge - a batch is cut by the UTF-8 bytes of its ids: non-ASCII document and user ids never take it past max_payload', async (t) => {
  const maxPayload = nc.info!.max_payload
  // maxBatchBytes as high as the server allows (EDGE_PUBLISH_MAX_BATCH_BYTES): the estimate alone keeps the message within max_payload.
  const { p } = publisher({ maxBatchBytes: maxPayload, lingerMs: 60_000, batchTarget: 10_000, busyUpdatesPerS: 0 })
  const docId = '文'.repeat(256) // 768 UTF-8 bytes
  const userId = 'ü'.repeat(256) // 512
  // 16 updates that fill a batch if the ids were counted by their UTF-16 length.
  const each = Math.floor((maxPayload - 1_536) / 16) - (docId.length + userId.length + 64)
  const outcomes = await Promise.allSettled(Array.from({ length: 16 }, (_, i) => p.publish('acme', docId, userId, new Uint8Array(each).fill(i + 1))))
  const failed = outcomes.flatMap((o) => (o.status === 'rejected' ? [(o.reason as Error).message.slice(-60)] : []))
  t.equal(failed.length, 0, `every update stored (${failed[0] ?? 'none failed'})`)
})
