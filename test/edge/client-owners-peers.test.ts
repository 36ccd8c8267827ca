import t from 'tap'
import * as Y from 'yjs'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'
import { RawSocket, frames } from '../helpers/raw-socket.ts'
import { counterValue } from '../helpers/metric-value.ts'
import { forgeNextClocks } from '../helpers/edits.ts'

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
