// A room's first state comes from core, or from a room on another edge while core is slow or
// away; fan-outs of peers can come before it.
import t from 'tap'
import { join } from 'node:path'
import * as Y from 'yjs'
import { jetstreamManager } from '@nats-io/jetstream'
import { AGG_STREAM, CloseCode, DocEvent, ServiceSubjects, ServiceUser, decodeStateRequest } from '../../contracts/mod.ts'
import { respondState } from '../../runtime/state-transfer.ts'
import { FsBlobStore } from '../../runtime/blobs/fs-store.ts'
import { restoreDocument } from '../../core/deletion.ts'
import { eraseDocument } from '../../core/erasure.ts'
import { docNotifier } from '../helpers/doc-notices.ts'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'
import { RawSocket, frames } from '../helpers/raw-socket.ts'
import { counterValue } from '../helpers/metric-value.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const edgeA = await stack.edge()
const edgeB = await stack.edge({ stateTimeoutMs: 3_000 })

t.test("edge - a peer's fan-out that comes while a room loads reaches the room's first joiners, who join empty", async (t) => {
  const tok = await token({ tenant: 'acme' })
  const core = await stack.core()
  const a = yclient(edgeA.url, 'load-race', tok)
  t.teardown(() => a.destroy())
  await a.synced()
  a.text.insert(0, 'hello')
  await until('materialized', async () => (await materializedText(core.url, 'load-race', tok)) === 'hello')
  // Core paused: its subject is held, nothing answers (a subscriber that never replies).
  await core.stop()
  const nc = await stack.connect(ServiceUser.Core)
  let asked = 0
  const silent = nc.subscribe(ServiceSubjects.coreState, { callback: () => void asked++ })
  t.teardown(() => silent.unsubscribe())
  await nc.flush()

  const b = yclient(edgeB.url, 'load-race', tok)
  t.teardown(() => b.destroy())
  await until("B's room asked core", () => asked > 0)
  a.text.insert(5, ' world') // fanned out to B's room while it waits for core
  await b.synced()
  await until('the client on B has it', () => b.text.toString() === 'hello world')
  a.text.insert(11, '!')
  await until('and what builds on it', () => b.text.toString() === 'hello world!')
})

t.test("edge - a room opening right after the document's last room on this edge closed gets that room's newest edits, which core has not committed yet", async (t) => {
  const tok = await token({ tenant: 'acme' })
  const core = await stack.core()
  const first = yclient(edgeA.url, 'successor', tok)
  await first.synced()
  first.text.insert(0, 'hello')
  await until('materialized', async () => (await materializedText(core.url, 'successor', tok)) === 'hello')
  const committed = Y.encodeStateAsUpdate(first.doc)
  first.destroy()
  await until('the room closed', async () => (await counterValue(edgeA.edge.metrics.rooms)) === 0)

  // Core falls behind the stream (a partition changing owner): it answers with what it committed.
  await core.stop()
  const nc = await stack.connect(ServiceUser.Core)
  const behind = nc.subscribe(ServiceSubjects.coreState, {
    callback: (err, msg) => {
      const stale = new Y.Doc()
      Y.applyUpdate(stale, committed)
      if (!err) respondState(msg, { status: 'found', update: Y.encodeStateAsUpdate(stale, decodeStateRequest(msg.data).stateVector) })
    },
  })
  t.teardown(() => behind.unsubscribe())
  await nc.flush()

  // A writer opens it, types and goes (its tab closed): its room closes.
  const writer = await RawSocket.open(edgeA.url, 'successor', tok)
  const w = new Y.Doc()
  Y.applyUpdate(w, committed)
  const before = Y.encodeStateVector(w)
  w.getText('t').insert(5, ' world')
  writer.send(frames.update(Y.encodeStateAsUpdate(w, before)))
  await until('acked', async () => (await counterValue(edgeA.edge.metrics.updatesPublished)) >= 2)
  writer.close()
  await until('the room closed', async () => (await counterValue(edgeA.edge.metrics.rooms)) === 0)

  const reader = yclient(edgeA.url, 'successor', tok)
  t.teardown(() => reader.destroy())
  await reader.synced()
  await until('the reader has the edit', () => reader.text.toString() === 'hello world')
})

t.test('edge - an edit acked after an erasure closed its room goes to no later room: the restored document shows none of it', async (t) => {
  const core = await stack.core()
  const tok = await token({ tenant: 'acme' })
  const admin = await stack.connect(ServiceUser.Admin)
  const notify = docNotifier(admin)
  const writer = yclient(edgeA.url, 'gdpr', tok)
  t.teardown(() => writer.destroy())
  await writer.synced()
  writer.text.insert(0, 'secret body')
  await until('materialized', async () => (await materializedText(core.url, 'gdpr', tok)) === 'secret body')

  // PubAcks come back slowly from here (JetStream busy, a leader change).
  const publisher = (edgeA.edge as unknown as { publisher: { publish: (...args: unknown[]) => Promise<unknown> } }).publisher
  const publish = publisher.publish.bind(publisher)
  let release!: () => void
  const released = new Promise<void>((r) => (release = r))
  let slowAck: Promise<unknown> | null = null
  publisher.publish = (...args) => (slowAck = publish(...args).then(async (r) => (await released, r)))
  t.teardown(() => void (publisher.publish = publish))
  // A co-editor's first edit (self-contained: its client's clock 0): in flight when the erasure comes.
  const coeditor = yclient(edgeA.url, 'gdpr', tok)
  t.teardown(() => coeditor.destroy())
  await coeditor.synced()
  const closed = coeditor.nextClose()
  coeditor.doc.getMap('meta').set('title', 'SECRET TITLE')
  await until('in flight', () => slowAck !== null)
  const blobs = await FsBlobStore.open(join(stack.dir, 'blobs'))
  await eraseDocument({ pool: stack.db, blobs, aggJsm: await jetstreamManager(admin), aggStream: AGG_STREAM, tenantJsm: null, notify }, { tenant: 'acme', docId: 'gdpr', actor: 'dpo@test', reason: 'GDPR' })
  t.equal((await closed).code, CloseCode.DocumentDeleted)
  writer.destroy()
  coeditor.destroy()
  release()
  await slowAck
  await new Promise((r) => setImmediate(r)) // the ack reached the closed room

  await restoreDocument(stack.db, { tenant: 'acme', docId: 'gdpr', actor: 'ops@test', reason: 'restore after erase' })
  await notify({ tenant: 'acme', docId: 'gdpr', event: DocEvent.Restored })
  const reader = yclient(edgeA.url, 'gdpr', tok)
  t.teardown(() => reader.destroy())
  await reader.synced()
  t.equal(reader.doc.getMap('meta').get('title'), undefined, 'not the erased title')
  t.equal(reader.text.toString(), '', 'nor the erased body')
})
