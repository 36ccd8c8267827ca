import t, { type Test } from 'tap'
import * as Y from 'yjs'
import WebSocket from 'ws'
import * as decoding from 'lib0/decoding'
import { SAVED_MESSAGE_TYPE, ServiceSubjects, ServiceUser, SubjectPatterns, decodeCommittedNotice, encodeCommittedNotice, type CommittedNotice } from '../../contracts/mod.ts'
import { CommitWatch } from '../../edge/commit-watch.ts'
import { UpdatePublisher } from '../../edge/publisher.ts'
import { createEdgeMetrics } from '../../edge/metrics.ts'
import { SavedReceipts } from '../../edge/saved-receipts.ts'
import { createLogger } from '../../runtime/log.ts'
import { createRegistry } from '../../runtime/metrics.ts'
import { SavedProvider, type SavedStatus } from '../../clients/saved.ts'
import { setup, token } from '../helpers/setup.ts'
import { until, yclient } from '../helpers/client.ts'
import { opLogReplay } from '../helpers/typed.ts'
import { counterValue } from '../helpers/metric-value.ts'
import { frames } from '../helpers/raw-socket.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const edge = await stack.edge()

function savedClient(t: Test, docId: string, tok: string) {
  const doc = new Y.Doc()
  const client = new SavedProvider(edge.url, docId, doc, { params: { token: tok }, WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket, disableBc: true })
  const seen: SavedStatus[] = []
  client.onChange((s) => seen.push(s))
  t.teardown(() => (client.destroy(), doc.destroy())) // the doc's awareness timer goes with the doc
  return { client, doc, text: doc.getText('t'), seen }
}

const synced = (p: SavedProvider['provider']) => until('synced', () => p.synced)

t.test('clients - "saved" comes only once core has committed the edits, not at the JetStream ack', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const first = await stack.core()
  const writer = savedClient(t, 'saved-doc', tok)
  await synced(writer.client.provider)
  await first.stop()
  const before = await counterValue(edge.edge.metrics.updatesPublished)
  for (let i = 0; i < 5; i++) writer.text.insert(i, String(i))
  t.equal(writer.client.status.unsaved, 5, 'five edits waiting')
  await until('JetStream acked all five', async () => (await counterValue(edge.edge.metrics.updatesPublished)) >= before + 5)
  t.equal(writer.client.status.saved, false, 'in JetStream but no core yet: not saved')

  const core = await stack.core()
  await until('saved once core committed', () => writer.client.status.saved, 20_000)
  const log = await opLogReplay(stack.db, 'acme', 'saved-doc')
  t.equal(log.text, '01234', 'when "saved" was reported, the op log held every edit')
  t.same(writer.seen.at(-1), { saved: true, unsaved: 0, readOnly: false })

  // Typing on with core running: saved again after each burst.
  writer.text.insert(5, 'more')
  t.equal(writer.client.status.saved, false)
  await until('saved again', () => writer.client.status.saved, 20_000)
  t.equal((await opLogReplay(stack.db, 'acme', 'saved-doc')).text, '01234more')
  await core.stop()
})

t.test('clients - a viewer is told its edits are never saved, not "saved"', async (t) => {
  const core = await stack.core()
  t.teardown(() => core.stop())
  const viewer = savedClient(t, 'saved-viewer', await token({ tenant: 'acme', sub: 'viewer-1', role: 'viewer' }))
  await synced(viewer.client.provider)
  await until('told read-only', () => viewer.client.status.readOnly)
  t.same(viewer.client.status, { saved: true, unsaved: 0, readOnly: true }, 'nothing typed yet: nothing unsaved')
  const dropped = await counterValue(edge.edge.metrics.viewerUpdatesDropped)
  viewer.text.insert(0, 'never stored')
  await until('the edge refused the edit', async () => (await counterValue(edge.edge.metrics.viewerUpdatesDropped)) > dropped)
  // The edge counts the refused frame as settled; a round trip later its count has come.
  const editor = savedClient(t, 'saved-viewer', await token({ tenant: 'acme' }))
  await synced(editor.client.provider)
  editor.text.insert(0, 'x')
  await until('an editor\'s edit is saved meanwhile', () => editor.client.status.saved, 20_000)
  t.same(viewer.client.status, { saved: false, unsaved: 1, readOnly: true }, 'the viewer\'s edit stays unsaved')
  t.notOk(viewer.seen.some((s) => s.unsaved > 0 && s.saved), 'never reported saved with an edit outstanding')
})

t.test('clients - edits made offline count as unsaved and are saved after the reconnect', async (t) => {
  const core = await stack.core()
  t.teardown(() => core.stop())
  const tok = await token({ tenant: 'acme' })
  const writer = savedClient(t, 'offline-doc', tok)
  await synced(writer.client.provider)
  writer.client.provider.disconnect()
  writer.text.insert(0, 'offline ')
  writer.text.insert(8, 'edits')
  t.same(writer.client.status, { saved: false, unsaved: 2, readOnly: false })
  writer.client.provider.connect()
  await until('saved after the reconnect', () => writer.client.status.saved, 20_000)
  t.equal((await opLogReplay(stack.db, 'acme', 'offline-doc')).text, 'offline edits')
})

t.test('clients - an edit the room holds while it is still on its way to JetStream is saved only once it is stored', async (t) => {
  const core = await stack.core()
  t.teardown(() => core.stop())
  const tok = await token({ tenant: 'acme' })
  const observer = yclient(edge.url, 'inflight-doc', tok) // keeps the room open across the writer's reconnect
  t.teardown(() => observer.destroy())
  await observer.synced()
  const writer = savedClient(t, 'inflight-doc', tok)
  await synced(writer.client.provider)
  const resume = await stack.pauseNats()
  let paused = true
  t.teardown(() => paused && resume())
  writer.text.insert(0, 'PRECIOUS')
  await new Promise((resolve) => setTimeout(resolve, 200)) // its publish waits for nats-server
  // The socket blips: the provider's sync step 2 on the new socket carries the edit the room holds in flight.
  writer.client.provider.disconnect()
  writer.client.provider.connect()
  await synced(writer.client.provider)
  await new Promise((resolve) => setTimeout(resolve, 500))
  t.equal(writer.client.status.saved, false, 'not saved while the edit is in no stream')
  resume()
  paused = false
  await until('saved once stored', () => writer.client.status.saved, 20_000)
  await until('committed', async () => (await opLogReplay(stack.db, 'acme', 'inflight-doc')).text === 'PRECIOUS', 20_000)
})

t.test('clients - an update frame the room drops (missing dependencies) is not saved until the resync that carries it commits', async (t) => {
  const core = await stack.core()
  t.teardown(() => core.stop())
  const tok = await token({ tenant: 'acme' })
  const local = new Y.Doc()
  const updates: Uint8Array[] = []
  local.on('update', (u: Uint8Array) => updates.push(u))
  local.getText('t').insert(0, 'offline ') // made offline, never sent
  local.getText('t').insert(8, 'keystroke') // typed on reconnect, sent before the sync step 2
  const ws = new WebSocket(`${edge.url}/dropped-doc?token=${tok}&saved=1`)
  t.teardown(() => ws.close())
  const saved: number[] = []
  let greeted!: () => void
  const greeting = new Promise<void>((resolve) => (greeted = resolve))
  ws.on('message', (data: Buffer) => {
    const d = decoding.createDecoder(new Uint8Array(data))
    const type = decoding.readVarUint(d)
    if (type === SAVED_MESSAGE_TYPE) saved.push(decoding.readVarUint(d))
    if (type === 0) greeted()
  })
  await greeting
  ws.send(frames.update(updates[1]!))
  await until('the edge asked for a sync again', async () => (await counterValue(edge.edge.metrics.updatesRejected, { reason: 'missing-dependencies' })) > 0)
  await new Promise((resolve) => setTimeout(resolve, 500))
  t.same(saved, [], 'the dropped frame is not saved')
  ws.send(frames.step2(Y.encodeStateAsUpdate(local))) // the resync's reply (a sync step 2, as a stock client answers): both edits
  await until('both frames saved', () => saved.at(-1) === 2, 20_000)
  t.equal((await opLogReplay(stack.db, 'acme', 'dropped-doc')).text, 'offline keystroke', 'and committed')
})

t.test('clients - a socket that did not ask never gets a saved frame; one that asked does', async (t) => {
  const core = await stack.core()
  t.teardown(() => core.stop())
  const tok = await token({ tenant: 'acme' })
  const typeOf = (data: Buffer) => data[0]
  const open = async (query: string) => {
    const ws = new WebSocket(`${edge.url}/stock-doc?token=${tok}${query}`)
    const types: number[] = []
    ws.on('message', (data: Buffer) => types.push(typeOf(data)!))
    await new Promise((resolve) => ws.once('open', resolve))
    t.teardown(() => ws.close())
    return { ws, types }
  }
  const stock = await open('')
  const asking = await open('&saved=1')
  // Each socket writes as its own Yjs client (the edge refuses one socket writing another live one's ids).
  const writer = new Y.Doc()
  writer.clientID = 4242
  writer.getText('t').insert(0, 'x')
  const published = await counterValue(edge.edge.metrics.updatesPublished)
  stock.ws.send(frames.update(Y.encodeStateAsUpdate(writer)))
  // The asking socket's edit builds on it: sent before the room has it, it would be dropped (never saved).
  await until('the stock edit is in the stream', async () => (await counterValue(edge.edge.metrics.updatesPublished)) > published)
  const second = new Y.Doc()
  Y.applyUpdate(second, Y.encodeStateAsUpdate(writer))
  second.clientID = 4343
  const before = Y.encodeStateVector(second)
  second.getText('t').insert(1, 'y')
  asking.ws.send(frames.update(Y.encodeStateAsUpdate(second, before)))
  await until('the asking socket is told its update is saved', () => asking.types.includes(SAVED_MESSAGE_TYPE), 20_000)
  // The stock socket's update went first, so core committed it in the same notice or an earlier one.
  const reader = yclient(edge.url, 'stock-doc', tok)
  t.teardown(() => reader.destroy())
  await until('both updates materialized', () => reader.text.toString() === 'xy', 20_000)
  t.notOk(stock.types.includes(SAVED_MESSAGE_TYPE), 'the stock socket never saw the unknown message type')
})

t.test('clients - core sends committed notices only for messages carrying an edit whose socket asked for "saved"', async (t) => {
  const core = await stack.core()
  t.teardown(() => core.stop())
  const tok = await token({ tenant: 'acme' })
  const nc = await stack.connect(ServiceUser.Edge)
  const notices: string[][] = []
  nc.subscribe(SubjectPatterns.committed, { callback: (err, msg) => void (err || notices.push(decodeCommittedNotice(msg.data).msgIds)) })
  await nc.flush()
  const stock = yclient(edge.url, 'notice-doc', tok)
  t.teardown(() => stock.destroy())
  await until('stock client synced', () => stock.provider.synced)
  stock.text.insert(0, 'stock')
  await until('the stock edit is committed', async () => (await opLogReplay(stack.db, 'acme', 'notice-doc')).text === 'stock', 20_000)
  const asking = savedClient(t, 'notice-doc', tok)
  await synced(asking.client.provider)
  const changes = asking.seen.length
  asking.text.insert(5, ' saved')
  await until('the asking client is told "saved"', () => asking.client.status.saved && asking.seen.length >= changes + 2, 20_000)
  // Core publishes notices in commit order on one connection: the stock edit's would have come first.
  t.equal(notices.length, 1, 'one notice: for the asking socket\'s message, none for the stock one')
  t.equal(notices[0]?.length, 1)
})

/**
 * An edge's saved receipts (SavedReceipts over a started CommitWatch as `edgeId`), the counts
 * they tell the socket, and core's connection to send notices on.
 */
async function receiptsOf(t: Test, edgeId: string) {
  const nc = await stack.connect(ServiceUser.Edge)
  const commits = new CommitWatch(nc, edgeId, createEdgeMetrics(createRegistry('edge-test', false)), createLogger('test', 'silent'))
  commits.start()
  t.teardown(() => commits.stop())
  await nc.flush()
  const told: number[] = []
  const refusals = { closed: 0 }
  const receipts = new SavedReceipts((frame) => {
    const d = decoding.createDecoder(frame)
    if (decoding.readVarUint(d) !== SAVED_MESSAGE_TYPE) throw new Error('not a saved frame')
    told.push(decoding.readVarUint(d))
  }, commits, () => refusals.closed++)
  const core = await stack.connect(ServiceUser.Core)
  const notify = (notice: CommittedNotice) => core.publish(ServiceSubjects.committed(edgeId), encodeCommittedNotice(notice))
  return { commits, receipts, told, refusals, notify }
}

t.test('clients - an edit core dead-letters is never counted saved and closes its socket with 4422; the other edits of its stream message are saved', async (t) => {
  const { receipts, told, refusals, notify } = await receiptsOf(t, 'receipts-edge')
  const [first, second, third] = [receipts.open(), receipts.open(), receipts.open()]
  first.published(Promise.resolve({ msgId: 'acme:b:x:1', item: 0 }), false)
  second.published(Promise.resolve({ msgId: 'acme:b:x:1', item: 1 }), false)
  third.published(Promise.resolve({ msgId: 'acme:b:x:2', item: 0 }), false)
  // As core sends it (core/commit-outcomes.ts): both messages committed, the second update of the first refused.
  notify({ msgIds: ['acme:b:x:1', 'acme:b:x:2'], refused: [{ msgId: 'acme:b:x:1', items: [1] }] })
  await until('the refusal is told', () => refusals.closed === 1)
  await until('the edit before it is saved', () => told.length > 0)
  t.same(told, [1], 'saved through the first edit only: the refused one never settles, nor anything after it')
})

t.test('clients - a frame the edge dropped is saved with the sync step 2 that answers the edge\'s ask, never with an edit typed meanwhile', async (t) => {
  const { commits, receipts, told, notify } = await receiptsOf(t, 'dropped-edge')
  const [dropped, typed, answer] = [receipts.open(), receipts.open(), receipts.open()]
  dropped.dropped()
  // A delete typed before the client's answer: committed, yet it carries nothing of the dropped frame.
  typed.published(Promise.resolve({ msgId: 'acme:d:x:1', item: 0 }), false)
  let typedCommitted = false
  commits.watch('acme:d:x:1', () => (typedCommitted = true))
  notify({ msgIds: ['acme:d:x:1'], refused: [] })
  await until('the typed edit is committed', () => typedCommitted)
  await new Promise((r) => setImmediate(r))
  t.same(told, [], 'nothing told saved: the dropped frame before it is not')
  answer.published(Promise.resolve({ msgId: 'acme:d:x:2', item: 0 }), true)
  notify({ msgIds: ['acme:d:x:2'], refused: [] })
  await until('the answer is committed', () => told.length > 0)
  t.same(told, [3], 'the answer settles the dropped frame with it: all three saved')
})

t.test('clients - an edge that missed a committed notice (away from NATS when core sent it) asks the cores and gets it', async (t) => {
  const core = await stack.core()
  t.teardown(() => core.stop())
  const nc = await stack.connect(ServiceUser.Edge)
  // The test's own ear on the edge's notice subject: the notice goes out a moment after the
  // commit, and a watch started before it would hear it live rather than miss it.
  const sent = nc.subscribe(ServiceSubjects.committed('away-edge'), { max: 1 })
  const publisher = new UpdatePublisher(nc, 'away-edge', createEdgeMetrics(createRegistry('away-publisher', false)), createLogger('test', 'silent'), { ackTimeoutMs: 2_000, attempts: 3 })
  const ref = await publisher.publish('acme', 'missed-notice', 'u', Y.encodeStateAsUpdate(textDoc('saved while away')), true)
  // Committed, and its notice sent to this edge's subject while nothing of the edge listened.
  await until('committed', async () => (await opLogReplay(stack.db, 'acme', 'missed-notice')).text === 'saved while away')
  for await (const _ of sent) break
  const metrics = createEdgeMetrics(createRegistry('away-edge', false))
  const commits = new CommitWatch(nc, 'away-edge', metrics, createLogger('test', 'silent'), 200)
  commits.start()
  t.teardown(() => commits.stop())
  let heard: ReadonlySet<number> | null = null
  commits.watch(ref.msgId, (refused) => (heard = refused))
  await until('the watch hears of the commit', () => heard !== null, 5_000)
  t.same([...heard!], [], 'nothing of it refused')
  t.equal(await counterValue(metrics.savedNoticesRecovered), 1, 'counted as recovered')
})

function textDoc(text: string): Y.Doc {
  const doc = new Y.Doc()
  doc.getText('t').insert(0, text)
  return doc
}
