import t from 'tap'
import * as Y from 'yjs'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'
import { RawSocket, frames } from '../helpers/raw-socket.ts'
import { counterValue } from '../helpers/metric-value.ts'
import { forgeNextClocks, publishEdit, typed } from '../helpers/edits.ts'
import { jetstream } from '@nats-io/jetstream'

const stack = await setup()
t.teardown(() => stack.cleanup())

t.test("edge - a room opening while core is away learns from a peer room's state reply whose client ids are whose: a forgery there is refused", async (t) => {
  const docId = 'peer-owners'
  const authorTok = await token({ tenant: 'acme', sub: 'author' })
  const coEditorTok = await token({ tenant: 'acme', sub: 'co-editor' })
  let core = await stack.core()
  const edgeA = await stack.edge()
  // No resync from core: what the new room knows comes from edge A's answer.
  const edgeB = await stack.edge({ resyncDelayMs: 120_000 })
  const authorDoc = new Y.Doc()
  authorDoc.clientID = 7_011
  const author = yclient(edgeA.url, docId, authorTok, authorDoc)
  await author.synced()
  // Core away: the author's edit is durable in JetStream but in no state core could answer with.
  await core.stop()
  author.text.insert(0, 'mine ')
  await until("the author's edit acked", async () => (await counterValue(edgeA.edge.metrics.updatesPublished)) >= 1)

  const reader = yclient(edgeB.url, docId, coEditorTok)
  t.teardown(() => reader.destroy())
  await until('the reader loaded the room from edge A', () => reader.text.toString() === 'mine ')
  author.destroy()
  authorDoc.getText('t').insert(5, 'offline')
  const forger = await RawSocket.open(edgeB.url, docId, coEditorTok)
  t.teardown(() => forger.close())
  forger.send(frames.update(forgeNextClocks(reader.doc, 7_011, 'FORGED', 5)))
  await until('the forgery is refused', async () => (await counterValue(edgeB.edge.metrics.updatesRejected, { reason: 'foreign-client' })) === 1)

  core = await stack.core()
  const back = yclient(edgeB.url, docId, authorTok, authorDoc)
  t.teardown(() => back.destroy())
  await until('the reader has the offline edit', () => reader.text.toString() === 'mine offline')
  await until('core materialized it', async () => (await materializedText(core.url, docId, coEditorTok)) === 'mine offline', 20_000)
})

t.test("edge - a resync resending another user's structs the room lacks claims none of its clients for the resender: their author writes on", async (t) => {
  const docId = 'resent-unclaimed'
  const authorTok = await token({ tenant: 'acme', sub: 'author' })
  const coEditorTok = await token({ tenant: 'acme', sub: 'co-editor' })
  const core = await stack.core()
  // No resync from core: the room gets the author's first edit only with the co-editor's resend.
  const { edge, url } = await stack.edge({ resyncDelayMs: 120_000 })
  const reader = yclient(url, docId, coEditorTok)
  t.teardown(() => reader.destroy())
  await reader.synced()
  reader.text.insert(0, '!')
  // The author's first edit reaches JetStream past this edge (as from an edge that is gone since).
  const authorDoc = typed(7_012, 'mine ')
  await publishEdit(jetstream(await stack.connect()), 'acme', docId, Y.encodeStateAsUpdate(authorDoc), undefined, undefined, undefined, 'author')
  await until('core materialized it', async () => (await materializedText(core.url, docId, coEditorTok))?.includes('mine ') === true, 20_000)

  // The co-editor's client got it elsewhere and resends it with an edit of its own: two clients written.
  const resender = new Y.Doc()
  Y.applyUpdate(resender, Y.encodeStateAsUpdate(reader.doc))
  Y.applyUpdate(resender, Y.encodeStateAsUpdate(authorDoc))
  resender.getText('t').insert(0, '>')
  const socket = await RawSocket.open(url, docId, coEditorTok)
  t.teardown(() => socket.close())
  socket.send(frames.update(Y.encodeStateAsUpdate(resender, Y.encodeStateVector(reader.doc))))
  await until('the reader has the resend', () => reader.text.toString().length === '>mine !'.length)

  const back = yclient(url, docId, authorTok, authorDoc)
  t.teardown(() => back.destroy())
  await back.synced()
  back.text.insert(back.text.length, 'more')
  await until("the reader has the author's next edit", () => reader.text.toString().endsWith('more'))
  t.equal(await counterValue(edge.metrics.updatesRejected, { reason: 'foreign-client' }), 0, 'nothing refused as foreign')
  await until('core materialized it', async () => (await materializedText(core.url, docId, coEditorTok))?.endsWith('more') === true, 20_000)
})
