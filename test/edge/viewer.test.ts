import t from 'tap'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, readState, until, yclient } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()
const edge = await stack.edge()

t.test('edge - a viewer gets the document and presence but its edits never land', async (t) => {
  const editorTok = await token({ tenant: 'acme', sub: 'ed' })
  const viewerTok = await token({ tenant: 'acme', sub: 'vi', role: 'viewer' })
  const editor = yclient(edge.url, 'shared', editorTok)
  const viewer = yclient(edge.url, 'shared', viewerTok)
  t.teardown(() => (editor.destroy(), viewer.destroy()))
  await Promise.all([editor.synced(), viewer.synced()])

  editor.text.insert(0, 'by editor')
  await until('viewer receives the editor text', () => viewer.text.toString() === 'by editor')

  viewer.provider.awareness.setLocalStateField('cursor', 4)
  await until('editor sees viewer presence', () => (editor.provider.awareness.getStates().get(viewer.doc.clientID) as { cursor?: number } | undefined)?.cursor === 4)

  viewer.text.insert(0, 'VIEWER ')
  editor.text.insert(9, '!')
  await until('materialized the editor follow-up', async () => (await materializedText(core.url, 'shared', editorTok)) === 'by editor!')
  await until('editor has its follow-up', () => editor.text.toString() === 'by editor!')
  t.equal(editor.text.toString(), 'by editor!', 'the editor never sees the viewer edit')
  const rows = await stack.db.query("SELECT count(*)::int AS n FROM op_log WHERE user_id = 'vi'")
  t.equal(rows.rows[0].n, 0, 'no op from the viewer in the log')
  const reconnecting = yclient(edge.url, 'shared', viewerTok, viewer.doc)
  t.teardown(() => reconnecting.destroy())
  await reconnecting.synced()
  await new Promise((r) => setTimeout(r, 300))
  const doc = await readState(core.url, 'shared', editorTok)
  t.equal(typeof doc !== 'number' && doc.getText('t').toString(), 'by editor!', 'a viewer resync does not push its edits either')
})
