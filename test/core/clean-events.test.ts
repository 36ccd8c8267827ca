import t from 'tap'
import * as Y from 'yjs'
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream'
import { AGG_STREAM, CLEAN_STREAM, DLQ_STREAM, cleanSubject, serviceInboxPrefix, COMMENTS_ROOT, MSG_ID_HEADER, ServiceUser, cleanMsgId, decodeCleanEventBatch, MAX_CLEAN_EVENTS_PER_MESSAGE, editBatchSubject, editIngestSubject, editMsgId, editPartitionOf, encodeBatch, encodeEnvelope, type CleanEvent } from '../../contracts/mod.ts'
import { cleanMessages } from '../../core/clean-events.ts'
import { FeedPublisher } from '../../core/feed-publisher.ts'
import { createCoreMetrics } from '../../core/metrics.ts'
import { createLogger } from '../../runtime/log.ts'
import { createRegistry } from '../../runtime/metrics.ts'
import { setup } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
let running = await stack.core({ gapReportAfterMs: 60_000 })
const js = jetstream(await stack.connect())
const jsm = await jetstreamManager(await stack.connect(ServiceUser.Admin))

interface StoredMessage {
  subject: string
  msgId: string | undefined
  events: CleanEvent[]
}

/** The cleaned events of `docId` in the CLEAN stream (messages decoded by their zod schema), each with the message that carried it. */
async function cleanEvents(j: JetStreamManager, docId: string): Promise<(CleanEvent & { message: StoredMessage })[]> {
  const info = await j.streams.info(CLEAN_STREAM)
  const out = []
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await j.streams.getMessage(CLEAN_STREAM, { seq })
    if (!m) continue
    const batch = decodeCleanEventBatch(m.data)
    const message = { subject: m.subject, msgId: m.header?.get(MSG_ID_HEADER), events: batch.events }
    for (const e of batch.events) if (e.docId === docId) out.push({ ...e, message })
  }
  return out
}

function publish(j: JetStreamClient, docId: string, update: Uint8Array, o: { userId?: string; eventTs?: number; msgID?: string } = {}) {
  const env = encodeEnvelope({ v: 1, tenant: 'acme', docId, userId: o.userId ?? 'alice', update, ingestTs: Date.now(), ...(o.eventTs ? { eventTs: o.eventTs } : {}), edgeId: 'test' })
  return j.publish(editIngestSubject('acme', docId), env, { msgID: o.msgID ?? editMsgId('acme', docId, update) })
}

/** A writer under its own Yjs client id that keeps the document's whole history, so each edit is an incremental update. */
class Writer {
  readonly doc = new Y.Doc()
  constructor(clientID: number, base: Y.Doc | null) {
    if (base) Y.applyUpdate(this.doc, Y.encodeStateAsUpdate(base))
    this.doc.clientID = clientID // after applyUpdate: Yjs regenerates an id that remote structs carry
  }
  edit(change: (doc: Y.Doc) => void): Uint8Array {
    const sv = Y.encodeStateVector(this.doc)
    change(this.doc)
    return Y.encodeStateAsUpdate(this.doc, sv)
  }
}

const seqsOf = async (docId: string) => (await stack.db.query('SELECT stream_seq FROM op_log WHERE doc_id = $1 ORDER BY id', [docId])).rows.map((r) => Number(r.stream_seq))

t.test('core - one cleaned event per applied update, with op kinds, sizes, times and the source sequence', async (t) => {
  const docId = 'clean-kinds'
  const alice = new Writer(11, null)
  const inserted = alice.edit((d) => d.getText('t').insert(0, 'hello world'))
  const bob = new Writer(12, alice.doc)
  const deleted = bob.edit((d) => d.getText('t').delete(0, 6))
  Y.applyUpdate(alice.doc, deleted)
  const carol = new Writer(13, alice.doc)
  const formatted = carol.edit((d) => d.getText('t').format(0, 5, { bold: true }))
  const dave = new Writer(14, carol.doc)
  const commented = dave.edit((d) => d.getMap(COMMENTS_ROOT).set('c1', 'nice'))

  const eventTs = Date.now() - 5_000
  await publish(js, docId, inserted, { eventTs })
  await publish(js, docId, inserted, { msgID: 'acme:retry' }) // a retry: no event
  await publish(js, docId, deleted, { userId: 'bob' })
  await publish(js, docId, formatted, { userId: 'carol' })
  await publish(js, docId, commented, { userId: 'dave' })

  await until('four events', async () => (await cleanEvents(jsm, docId)).length === 4)
  const events = await cleanEvents(jsm, docId)
  const seqs = await seqsOf(docId)
  t.same(events.map((e) => e.sourceSeq), seqs, 'one per op-log row, in order, with its source stream sequence')
  t.same(events.map((e) => e.opKinds), [['insert'], ['delete'], ['format'], ['insert', 'comment']], 'op kinds from structs and delete set')
  t.same(events.map((e) => e.userId), ['alice', 'bob', 'carol', 'dave'])
  t.same(events.map((e) => e.clients), [[11], [], [13], [14]], 'the Yjs clients whose clocks moved (a delete moves none)')
  t.same(events[0]!.sizes, { updateBytes: inserted.byteLength, insertedChars: 11, deleted: 0 })
  t.same(events[1]!.sizes, { updateBytes: deleted.byteLength, insertedChars: 0, deleted: 6 })
  t.equal(events[0]!.eventTs, eventTs, 'event time from the client')
  t.ok(events[0]!.ingestTs > eventTs, 'ingest time from the edge')
  t.equal(events[1]!.eventTs, events[1]!.ingestTs, 'no client time: event time is ingest time')
  for (const e of events) {
    t.equal(e.tenant, 'acme')
    t.equal(e.sourceStream, AGG_STREAM)
    t.equal(e.message.subject, cleanSubject('acme'), 'on its tenant subject')
    t.equal(e.message.msgId, cleanMsgId(AGG_STREAM, e.message.events[0]!), 'message id derived from the source sequence and first item')
  }
})

t.test('core - updates of one batch message get one event each, told apart by item', async (t) => {
  const docId = 'clean-batch'
  const partition = editPartitionOf(docId, stack.partitions)
  const w = new Writer(21, null)
  const updates = [w.edit((d) => d.getText('t').insert(0, 'ab')), w.edit((d) => d.getText('t').insert(2, 'cd'))]
  const batch = encodeBatch({ v: 2, tenant: 'acme', partition, edgeId: 'test', updates: updates.map((update) => ({ docId, userId: 'alice', update, ingestTs: Date.now() })) })
  await js.publish(editBatchSubject('acme', partition), batch, { msgID: 'acme:b:clean-test:1' })
  await until('two events', async () => (await cleanEvents(jsm, docId)).length === 2)
  const events = await cleanEvents(jsm, docId)
  t.equal(events[0]!.sourceSeq, events[1]!.sourceSeq, 'one source message')
  t.same(events.map((e) => e.item), [0, 1], 'one event per item')
  t.same(events.map((e) => e.sizes.insertedChars), [2, 2], 'each its own sizes')
})

t.test('core - a replay from an earlier checkpoint, or a second publish of an event, stores no event twice', async (t) => {
  const docId = 'clean-replay'
  const w = new Writer(31, null)
  await publish(js, docId, w.edit((d) => d.getText('t').insert(0, 'one')))
  await publish(js, docId, w.edit((d) => d.getText('t').insert(3, ' two')))
  await until('two events', async () => (await cleanEvents(jsm, docId)).length === 2)
  const before = (await jsm.streams.info(CLEAN_STREAM)).state.messages

  // Replay: core restarted with every checkpoint at 0 reads the whole stream again.
  const checkpoints = async () => JSON.stringify((await stack.db.query('SELECT consumer, stream_seq FROM consumer_checkpoints ORDER BY consumer')).rows)
  const checkpointsBefore = await checkpoints()
  await running.stop()
  await stack.db.query('UPDATE consumer_checkpoints SET stream_seq = 0')
  running = await stack.core({ gapReportAfterMs: 60_000 })
  await until('every partition replayed to where it was', async () => (await checkpoints()) === checkpointsBefore, 30_000)
  await publish(js, docId, w.edit((d) => d.getText('t').insert(7, ' three')))
  await until('the new update has its event', async () => (await cleanEvents(jsm, docId)).length === 3)
  t.equal((await jsm.streams.info(CLEAN_STREAM)).state.messages, before + 1, 'the replayed updates published nothing again')
  t.same((await cleanEvents(jsm, docId)).map((e) => e.sourceSeq), await seqsOf(docId), 'still one event per op-log row')

  // What a publish retry after a lost ack (or a republish) sends: the same event again.
  const stored = (await cleanEvents(jsm, docId))[0]!.message
  const again = cleanMessages(stored.events)
  t.same(again.map((m) => m.msgId), [stored.msgId], 'the same events make the same message id')
  const publisher = new FeedPublisher(CLEAN_STREAM, await stack.connect(ServiceUser.Core), serviceInboxPrefix(ServiceUser.Core), createLogger('test', 'silent'), createCoreMetrics(createRegistry('core', false)))
  publisher.offer([...again, ...cleanMessages(stored.events)])
  publisher.offer(again)
  await publisher.flush()
  const marker = w.edit((d) => d.getText('t').insert(0, '> '))
  await publish(js, docId, marker)
  await until('a later event stored', async () => (await cleanEvents(jsm, docId)).length === 4)
  t.equal((await jsm.streams.info(CLEAN_STREAM)).state.messages, before + 2, 'the republished message was dropped by its message id')
})

t.test('core - a feed message JetStream does not take is retried, then given up, counted and logged, without blocking', async (t) => {
  const metrics = createCoreMetrics(createRegistry('core', false))
  const publisher = new FeedPublisher(CLEAN_STREAM, await stack.connect(ServiceUser.Core), serviceInboxPrefix(ServiceUser.Core), createLogger('test', 'silent'), metrics, { maxQueued: 10, maxInFlight: 4, attempts: 3, ackTimeoutMs: 300 })
  const gaveUp = async () => (await metrics.feedPublishFailures.get()).values.find((v) => v.labels.cause === 'gave-up')?.value ?? 0
  // A subject outside the stream: JetStream answers no stream, every attempt fails.
  const offered = performance.now()
  publisher.offer([{ subject: 'clean-nowhere.acme.x', data: new Uint8Array([1]), msgId: 'clean:test:1:0' }])
  t.ok(performance.now() - offered < 50, 'offer returns at once')
  await until('given up after its attempts', async () => (await gaveUp()) === 1)
  // A refusal (the stream that holds the subject is not the one expected) is retried and given up too, before any ack timeout.
  const refusals = createCoreMetrics(createRegistry('core', false))
  const wrongStream = new FeedPublisher(DLQ_STREAM, await stack.connect(ServiceUser.Core), serviceInboxPrefix(ServiceUser.Core), createLogger('test', 'silent'), refusals, { maxQueued: 10, maxInFlight: 4, attempts: 2, ackTimeoutMs: 60_000 })
  wrongStream.offer([{ subject: cleanSubject('acme'), data: new Uint8Array([1]), msgId: 'clean:test:refused:0' }])
  await until('a refused message given up', async () => (await refusals.feedPublishFailures.get()).values.some((v) => v.labels.cause === 'gave-up' && v.value === 1))
  await wrongStream.flush()
  publisher.offer(Array.from({ length: 12 }, (_, i) => ({ subject: cleanSubject('acme'), data: new Uint8Array([i]), msgId: `clean:test:full:${i}` })))
  t.equal((await metrics.feedPublishFailures.get()).values.find((v) => v.labels.cause === 'queue-full')?.value, 2, 'past maxQueued the oldest are dropped and counted')
  await publisher.flush()
})

t.test('core - cleaned events go one message per source message, in item order, at most MAX_CLEAN_EVENTS_PER_MESSAGE each, whatever the commit', async (t) => {
  const event = (tenant: string, sourceSeq: number, item: number): CleanEvent => ({ v: 1, tenant, docId: 'd', userId: 'u', clients: [1], eventTs: 1, ingestTs: 1, opKinds: ['insert'], sizes: { updateBytes: 1, insertedChars: 1, deleted: 0 }, sourceStream: AGG_STREAM, sourceSeq, item })
  // Source message 7 (acme) carries three updates, 8 (globex) one, 9 (acme) two.
  const events = [event('acme', 7, 0), event('acme', 7, 1), event('acme', 7, 2), event('globex', 8, 0), event('acme', 9, 0), event('acme', 9, 1)]
  const messages = cleanMessages(events)
  t.same(messages.map((m) => [m.subject, m.msgId, decodeCleanEventBatch(m.data).events.map((e) => e.item)]), [
    [cleanSubject('acme'), cleanMsgId(AGG_STREAM, { sourceSeq: 7, item: 0 }), [0, 1, 2]],
    [cleanSubject('globex'), cleanMsgId(AGG_STREAM, { sourceSeq: 8, item: 0 }), [0]],
    [cleanSubject('acme'), cleanMsgId(AGG_STREAM, { sourceSeq: 9, item: 0 }), [0, 1]],
  ], 'one message per source message, its events in item order')
  // A replay whose commits fall elsewhere (two commits instead of one) gives the same messages.
  const split = [...cleanMessages(events.slice(0, 4)), ...cleanMessages(events.slice(4))]
  t.same(split.map((m) => [m.msgId, Buffer.from(m.data).toString('hex')]), messages.map((m) => [m.msgId, Buffer.from(m.data).toString('hex')]), 'the same ids and bytes however the commits fall')
  const big = cleanMessages(Array.from({ length: MAX_CLEAN_EVENTS_PER_MESSAGE + 1 }, (_, i) => event('acme', 1, i)))
  t.same(big.map((m) => [m.msgId, decodeCleanEventBatch(m.data).events.length]), [[cleanMsgId(AGG_STREAM, { sourceSeq: 1, item: 0 }), MAX_CLEAN_EVENTS_PER_MESSAGE], [cleanMsgId(AGG_STREAM, { sourceSeq: 1, item: MAX_CLEAN_EVENTS_PER_MESSAGE }), 1]], 'split past the cap, each part its own id')
})
