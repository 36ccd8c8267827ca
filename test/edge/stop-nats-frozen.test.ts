import t from 'tap'
import * as Y from 'yjs'
import WebSocket from 'ws'
import { CloseCode } from '../../contracts/mod.ts'
import { SavedProvider } from '../../clients/saved.ts'
import { EDGE_STOP_DEADLINE_MS } from '../../edge/edge.ts'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until } from '../helpers/client.ts'
import { opLogProblems, opLogReplay } from '../helpers/typed.ts'
import { exited, freePort } from '../../scripts/lib/proc.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()

/** How soon after SIGTERM clients must hear 1012 although no publish can be acked. */
const PROMPT_CLOSE_MS = 5_000
/** Room for the process to exit once its deadline passed. */
const EXIT_MARGIN_MS = 3_000

t.test('edge - SIGTERM while nats-server is frozen: clients told 1012 at once, the process exits by its deadline, no saved edit lost', async (t) => {
  const port = await freePort()
  const edge = await stack.process('edge', port)
  const tok = await token({ tenant: 'acme' })
  const writers = [0, 1, 2].map((i) => {
    const docId = `frozen-${i}`
    const doc = new Y.Doc()
    const client = new SavedProvider(edge.url, docId, doc, { params: { token: tok }, WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket, disableBc: true })
    // One character per edit, saved in order: the first `saved` characters typed are the ones told saved.
    const w = { docId, client, text: doc.getText('t'), typed: '', saved: 0, closes: [] as { code: number; atMs: number }[] }
    client.onChange((s) => (w.saved = Math.max(w.saved, w.typed.length - s.unsaved)))
    client.provider.on('connection-close', ((e: { code: number } | null) => e && w.closes.push({ code: e.code, atMs: Date.now() })) as never)
    t.teardown(() => (client.destroy(), doc.destroy()))
    return w
  })
  await until('every writer synced', () => writers.every((w) => w.client.provider.synced))
  let typing = true
  const typed = Promise.all(writers.map(async (w, i) => {
    for (let n = 0; typing; n++) {
      const ch = String.fromCharCode(97 + ((i + n) % 26))
      w.typed += ch // before the insert: the saved listener runs inside it
      w.text.insert(w.text.length, ch)
      await new Promise((r) => setTimeout(r, 20))
    }
  }))
  await until('edits saved', () => writers.every((w) => w.saved >= 10))

  const resume = await stack.pauseNats()
  t.teardown(resume)
  await new Promise((r) => setTimeout(r, 500)) // edits pile up unacked
  const termAt = Date.now()
  edge.child.kill('SIGTERM')
  let exitedAfterMs: number | null = null
  const exit = exited(edge.child).then(() => (exitedAfterMs = Date.now() - termAt))
  await Promise.race([exit, new Promise((r) => setTimeout(r, EDGE_STOP_DEADLINE_MS + EXIT_MARGIN_MS))])
  const savedWhilePaused = writers.map((w) => w.typed.slice(0, w.saved))
  for (const w of writers) {
    const first = w.closes.find((c) => c.atMs >= termAt)
    t.equal(first?.code, CloseCode.ServiceRestart, `${w.docId}: first close after SIGTERM is 1012 (got ${JSON.stringify(w.closes.map((c) => c.code))})`)
    t.ok(first && first.atMs - termAt < PROMPT_CLOSE_MS, `${w.docId}: told within ${PROMPT_CLOSE_MS} ms (after ${first ? first.atMs - termAt : null} ms)`)
  }
  t.ok(exitedAfterMs !== null, `the edge exits by its ${EDGE_STOP_DEADLINE_MS} ms deadline while nats-server stays frozen (after ${exitedAfterMs} ms)`)
  t.equal(edge.child.exitCode, 1, 'exit code 1: the NATS drain was abandoned')

  resume()
  await exit
  // Before any client can resend: what they were told is saved must be in the op log already.
  for (const [i, w] of writers.entries()) {
    const saved = savedWhilePaused[i]!
    await until(`${w.docId}: core caught up`, async () => (await opLogReplay(stack.db, 'acme', w.docId)).text.startsWith(saved), 20_000).catch(() => undefined)
    t.ok((await opLogReplay(stack.db, 'acme', w.docId)).text.startsWith(saved), `${w.docId}: the ${saved.length} characters told saved are in the op log`)
  }

  // A replacement edge on the port: clients reconnect and resend what was not stored.
  const replacement = await stack.process('edge', port)
  t.teardown(() => replacement.kill9())
  await new Promise((r) => setTimeout(r, 1_000))
  typing = false
  await typed
  for (const w of writers) {
    await until(`${w.docId}: everything typed materialized`, async () => (await materializedText(core.url, w.docId, tok).catch(() => null)) === w.typed, 30_000).catch(() => undefined)
    t.equal(await materializedText(core.url, w.docId, tok), w.typed, `${w.docId}: everything typed is materialized`)
    t.same(await opLogProblems(stack.db, 'acme', w.docId, w.typed), [], `${w.docId}: the op log holds each typed character once`)
    await until(`${w.docId}: saved`, () => w.client.status.saved, 20_000)
  }
})
