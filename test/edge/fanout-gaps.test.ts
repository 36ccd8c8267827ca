import t from 'tap'
import * as Y from 'yjs'
import { FanKind, ServiceSubjects, decodeFan, encodeFan } from '../../contracts/mod.ts'
import { UpdatePublisher } from '../../edge/publisher.ts'
import { FanLink, sendFanUpdate } from '../../edge/fan-link.ts'
import { createEdgeMetrics } from '../../edge/metrics.ts'
import { createRegistry } from '../../runtime/metrics.ts'
import { createLogger } from '../../runtime/log.ts'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'
import { RawSocket, frames } from '../helpers/raw-socket.ts'
import { counterValue } from '../helpers/metric-value.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()
const edgeA = await stack.edge()
const edgeB = await stack.edge()

/**
 * A stand-in for a third edge: publishes updates durably to JetStream as an edge does, and
 * fans out only what the test says — the rest is a fan-out lost on the way.
 */
const nc = await stack.connect()
const publisher = new UpdatePublisher(nc, 'phantom-edge', createEdgeMetrics(createRegistry('phantom', false)), createLogger('phantom', 'silent'), { ackTimeoutMs: 2_000, attempts: 3 })
const fanOut = (docId: string, seq: number, payload: Uint8Array) =>
  nc.publish(ServiceSubjects.fan('acme', docId), encodeFan({ kind: FanKind.Update, edgeId: 'phantom-edge', stream: 'phantom-edge/1', seq, payload }))

/**
 * Waits past the rooms' one-off resync after opening (resyncDelayMs is 500 in tests), so only
 * the mechanism under test can bring what the other edge lacks.
 */
const openResyncsDone = () => new Promise((resolve) => setTimeout(resolve, 1_500))

/** The edit `change` makes on top of `base`, as the one update a client would send (not a diff, which carries every delete). */
function editOn(base: Y.Doc, change: (text: Y.Text) => void): Uint8Array {
  let update: Uint8Array | null = null
  const capture = (u: Uint8Array) => (update = u)
  base.on('update', capture)
  change(base.getText('t'))
  base.off('update', capture)
  if (!update) throw new Error('the change changed nothing')
  return update
}

t.test('edge - a missed fan-out (a delete) is noticed by its sequence gap and fetched from core', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const a = yclient(edgeA.url, 'gap', tok)
  const b = yclient(edgeB.url, 'gap', tok)
  t.teardown(() => (a.destroy(), b.destroy()))
  await Promise.all([a.synced(), b.synced()])
  a.text.insert(0, 'hello world')
  await until('B has the text', () => b.text.toString() === 'hello world')
  await openResyncsDone()

  const phantom = new Y.Doc()
  Y.applyUpdate(phantom, Y.encodeStateAsUpdate(b.doc))
  const first = editOn(phantom, (text) => text.insert(0, '> '))
  const lostDelete = editOn(phantom, (text) => text.delete(7, 6)) // ' world'
  const third = editOn(phantom, (text) => text.insert(text.length, '!'))
  const gapsBefore = await counterValue(edgeB.edge.metrics.fanGaps)
  for (const update of [first, lostDelete, third]) await publisher.publish('acme', 'gap', 'phantom', update)
  fanOut('gap', 1, first)
  fanOut('gap', 3, third) // seq 2, the delete, never arrives

  const expected = phantom.getText('t').toString()
  t.equal(expected, '> hello!')
  await until('B fetched the missed delete', () => b.text.toString() === expected)
  await until('A fetched it too', () => a.text.toString() === expected)
  t.ok((await counterValue(edgeB.edge.metrics.fanGaps)) > gapsBefore, 'the gap was counted')
  await until('materialized', async () => (await materializedText(core.url, 'gap', tok)) === expected)
})

t.test("edge - a burst's last fan-out, lost, is fetched when its stream's last sequence comes", async (t) => {
  const tok = await token({ tenant: 'acme' })
  const b = yclient(edgeB.url, 'last-lost', tok)
  t.teardown(() => b.destroy())
  await b.synced()
  b.text.insert(0, 'hello')
  await until('materialized', async () => (await materializedText(core.url, 'last-lost', tok)) === 'hello')
  await openResyncsDone()

  const phantom = new Y.Doc()
  Y.applyUpdate(phantom, Y.encodeStateAsUpdate(b.doc))
  const first = editOn(phantom, (text) => text.insert(5, ' world'))
  const last = editOn(phantom, (text) => text.insert(11, '!'))
  for (const update of [first, last]) await publisher.publish('acme', 'last-lost', 'phantom', update)
  fanOut('last-lost', 1, first) // seq 2, the burst's last, never arrives: no later update reveals it
  await until('B has the first', () => b.text.toString() === 'hello world')
  nc.publish(ServiceSubjects.fan('acme', 'last-lost'), encodeFan({ kind: FanKind.Last, edgeId: 'phantom-edge', stream: 'phantom-edge/1', seq: 2 }))
  await until('B fetched the last', () => b.text.toString() === 'hello world!')
})

t.test('edge - a room sends its fan stream\'s last sequence once, when the stream has been quiet a second', async (t) => {
  const log = createLogger('fan-test', 'silent')
  const metrics = createEdgeMetrics(createRegistry('fan-test', false))
  const heard: { kind: string; seq?: number; atMs: number }[] = []
  const sub = nc.subscribe(ServiceSubjects.fan('acme', 'fan-last'), { callback: (_err, msg) => void heard.push({ ...decodeFan(msg.data), atMs: Date.now() }) })
  t.teardown(() => sub.unsubscribe())
  const sender = new FanLink({ nc, tenant: 'acme', docId: 'fan-last', edgeId: 'sender', log, metrics }, { update: () => {}, awareness: () => {}, refetch: () => {}, missed: () => {} })
  t.teardown(() => sender.close())
  sender.peerSeen()
  const startedMs = Date.now()
  for (let i = 0; i < 3; i++) {
    sender.sendUpdate(editOn(new Y.Doc(), (text) => text.insert(0, `${i}`)), 'writer')
    await new Promise((r) => setTimeout(r, 300))
  }
  await until('the last sequence went out', () => heard.some((m) => m.kind === FanKind.Last))
  await new Promise((r) => setTimeout(r, 1_200))
  const lasts = heard.filter((m) => m.kind === FanKind.Last)
  t.same(lasts.map((m) => m.seq), [3], 'once, with the last sequence')
  t.ok(lasts[0]!.atMs - startedMs >= 600 + 1_000, 'a second after the last update, not during the burst')
})

t.test('edge - an edit acked after its room closed still reaches the other edge', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const b = yclient(edgeB.url, 'late-ack', tok)
  t.teardown(() => b.destroy())
  await b.synced()
  await openResyncsDone()

  const writer = await RawSocket.open(edgeA.url, 'late-ack', tok)
  const update = editOn(new Y.Doc(), (text) => text.insert(0, 'written then gone'))
  writer.send(frames.update(update))
  writer.close() // the room on edge A closes with its last client, before JetStream acks
  await until('B got the edit through the fan-out', () => b.text.toString() === 'written then gone')
})

t.test('edge - a room keeps a sequence per peer room stream, none for HTTP ingest\'s one-update streams', async (t) => {
  const updates: Uint8Array[] = []
  const log = createLogger('fan-test', 'silent')
  const metrics = createEdgeMetrics(createRegistry('fan-test', false))
  const link = new FanLink({ nc, tenant: 'acme', docId: 'fan-streams', edgeId: 'listener', log, metrics }, { update: (payload) => updates.push(payload), awareness: () => {}, refetch: () => {}, missed: () => {} })
  t.teardown(() => link.close())
  await nc.flush()
  const posts = 20
  for (let i = 0; i < posts; i++) sendFanUpdate(nc, 'acme', 'fan-streams', 'http-edge', editOn(new Y.Doc(), (text) => text.insert(0, `post ${i}`)), 'poster', log, metrics)
  fanOut('fan-streams', 1, editOn(new Y.Doc(), (text) => text.insert(0, 'from a room')))
  await until('every fan-out arrived', () => updates.length === posts + 1)
  const tracked = (link as unknown as { peerSeqs: Map<string, number> }).peerSeqs
  t.same([...tracked.keys()], ['phantom-edge/1'], 'only the room stream is tracked')
})

t.test("edge - a room keeps the sequences of a bounded number of peer room streams; one forgotten and heard again counts as a gap", async (t) => {
  const gaps: boolean[] = []
  const log = createLogger('fan-test', 'silent')
  const metrics = createEdgeMetrics(createRegistry('fan-test', false))
  const link = new FanLink({ nc, tenant: 'acme', docId: 'fan-visits', edgeId: 'listener', log, metrics }, { update: (_payload, gap) => gaps.push(gap), awareness: () => {}, refetch: () => {}, missed: () => {} })
  t.teardown(() => link.close())
  await nc.flush()
  // A writer visiting from another edge 200 times: each visit a room of its own, a stream of its own.
  const visit = (i: number, seq: number) => nc.publish(ServiceSubjects.fan('acme', 'fan-visits'), encodeFan({ kind: FanKind.Update, edgeId: 'visitor-edge', stream: `visitor-edge/${i}`, seq, payload: editOn(new Y.Doc(), (text) => text.insert(0, 'x')) }))
  for (let i = 0; i < 200; i++) visit(i, 1)
  await until('every fan-out arrived', () => gaps.length === 200)
  const tracked = (link as unknown as { peerSeqs: Map<string, number> }).peerSeqs
  t.ok(tracked.size <= 64, `${tracked.size} streams kept`)
  t.notOk(gaps.includes(true), 'no gap among them')
  visit(0, 2) // the first visit's room, long forgotten, fans out again
  await until('it arrived', () => gaps.length === 201)
  t.equal(gaps.at(-1), true, 'a gap: the room refetches rather than trust it missed nothing')
})

t.test('edge - every open room refetches from core when its NATS connection comes back', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const b = yclient(edgeB.url, 'reconnect', tok)
  t.teardown(() => b.destroy())
  await b.synced()
  b.text.insert(0, 'before')
  await until('materialized', async () => (await materializedText(core.url, 'reconnect', tok)) === 'before')

  // Acked but never fanned out, as if sent while B's edge was disconnected.
  const phantom = new Y.Doc()
  Y.applyUpdate(phantom, Y.encodeStateAsUpdate(b.doc))
  await publisher.publish('acme', 'reconnect', 'phantom', editOn(phantom, (text) => text.insert(6, ' and during')))
  await until('core has it', async () => (await materializedText(core.url, 'reconnect', tok)) === 'before and during')
  const resyncsBefore = await counterValue(edgeB.edge.metrics.roomResyncs, { reason: 'reconnect' })
  await stack.restartNats('SIGTERM')
  await until('B got it after the reconnect', () => b.text.toString() === 'before and during', 30_000)
  t.ok((await counterValue(edgeB.edge.metrics.roomResyncs, { reason: 'reconnect' })) > resyncsBefore, 'counted as a reconnect resync')
})
