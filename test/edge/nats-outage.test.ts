import t from 'tap'
import * as Y from 'yjs'
import WebSocket from 'ws'
import { jetstreamManager } from '@nats-io/jetstream'
import { tenantStreamName } from '../../contracts/mod.ts'
import { SavedProvider } from '../../clients/saved.ts'
import { UpdatePublisher } from '../../edge/publisher.ts'
import { createEdgeMetrics } from '../../edge/metrics.ts'
import { createRegistry } from '../../runtime/metrics.ts'
import { createLogger } from '../../runtime/log.ts'
import { terminate } from '../../scripts/lib/proc.ts'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient, type TestClient } from '../helpers/client.ts'
import { opLogProblems } from '../helpers/typed.ts'
import { edit } from '../helpers/edits.ts'

/** Longer than the publisher's retry budget (5 attempts of 2 s) once nats-server's restart is added. */
const DOWN_MS = 9_000

const stack = await setup()
t.teardown(() => stack.cleanup())

t.test('edge - a publish outlives a nats-server outage longer than its retry budget and is stored once after the reconnect', async (t) => {
  const nc = await stack.connect()
  const p = new UpdatePublisher(nc, 'outage-test', createEdgeMetrics(createRegistry('outage-test', false)), createLogger('outage-test', 'silent'), { partitions: stack.partitions, ackTimeoutMs: 200, attempts: 2, lingerMs: 0 })
  t.teardown(() => p.close())
  // A connection of its own each time: one opened before the restart may still be reconnecting after it.
  const messages = async () => (await (await jetstreamManager(await stack.connect({ tenant: 'acme', kind: 'admin' }))).streams.info(tenantStreamName('acme'))).state.messages
  const before = await messages()
  const statuses: string[] = []
  void (async () => {
    for await (const s of nc.status()) statuses.push(s.type)
  })()

  await terminate(stack.nats.process, 'SIGTERM')
  await until('the connection saw the disconnect', () => statuses.includes('disconnect'))
  let outcome = 'pending'
  const published = p.publish('acme', 'outage-unit', 'writer', edit('waited', 9)).then(
    () => (outcome = 'stored'),
    (err: Error) => (outcome = err.message),
  )
  await new Promise((resolve) => setTimeout(resolve, 1_500)) // three times its budget of 2 attempts of 200 ms
  t.equal(outcome, 'pending', 'not failed while disconnected')
  await stack.restartNats('SIGTERM') // the process is gone already: this starts it on the same store and port
  await published
  t.equal(outcome, 'stored', 'stored after the reconnect')
  t.equal((await messages()) - before, 1, 'once')
})

t.test('edge - nats-server down longer than the publish retry budget while clients type: each typed character is stored once', async (t) => {
  const core = await stack.process('core')
  const edge = await stack.process('edge')
  const tok = await token({ tenant: 'acme' })
  const writers: { doc: Y.Doc; client: SavedProvider; docId: string; typed: string; savedWhileDown: number }[] = []
  const observers: TestClient[] = []
  t.teardown(() => {
    for (const w of writers) {
      w.client.destroy()
      w.doc.destroy()
    }
    for (const o of observers) o.destroy()
  })
  let nats: 'up' | 'down' = 'up'
  for (let i = 0; i < 4; i++) {
    const docId = `outage-${i}`
    const doc = new Y.Doc()
    const client = new SavedProvider(edge.url, docId, doc, { params: { token: tok }, WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket, disableBc: true })
    const writer = { doc, client, docId, typed: '', savedWhileDown: 0 }
    client.onChange((s) => {
      if (s.saved && nats === 'down') writer.savedWhileDown++
    })
    writers.push(writer)
    const observer = yclient(edge.url, docId, tok)
    observers.push(observer)
    await until(`${docId}: writer synced`, () => client.provider.synced)
    await observer.synced()
  }

  let typing = true
  const typed = Promise.all(
    writers.map(async (w, i) => {
      for (let n = 0; typing; n++) {
        const ch = String.fromCharCode(97 + ((i + n) % 26))
        w.doc.getText('t').insert(w.doc.getText('t').length, ch)
        w.typed += ch
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    }),
  )
  await new Promise((resolve) => setTimeout(resolve, 1_000))
  // Stopped for good (not paused): the edge's connection drops and nats.js reconnects once it is back.
  await terminate(stack.nats.process, 'SIGTERM')
  await new Promise((resolve) => setTimeout(resolve, 500)) // a saved frame sent before the stop arrives
  nats = 'down'
  await new Promise((resolve) => setTimeout(resolve, DOWN_MS - 500))
  nats = 'up'
  await stack.restartNats('SIGTERM') // the process is gone already: this starts it on the same store and port
  await new Promise((resolve) => setTimeout(resolve, 3_000))
  typing = false
  await typed

  // Not asserted: that each writer is told "saved" in the end. Core's commit notices are best
  // effort, and one sent while the edge is disconnected is lost for good: it holds its socket's
  // count back (edge/saved-receipts.ts settles frames in order; edge/commit-watch.ts does not ask again).
  for (const [i, w] of writers.entries()) {
    t.equal(w.savedWhileDown, 0, `${w.docId}: never "saved" while nats-server was down`)
    await until(`${w.docId}: materialized`, async () => (await materializedText(core.url, w.docId, tok).catch(() => null)) === w.typed, 40_000)
    t.same(await opLogProblems(stack.db, 'acme', w.docId, w.typed), [], `${w.docId}: the op log holds each of the ${w.typed.length} typed characters once`)
    await until(`${w.docId}: observer converged`, () => observers[i]!.text.toString() === w.typed, 20_000)
  }
  t.equal(edge.child.exitCode, null, 'edge alive')
  t.equal(core.child.exitCode, null, 'core alive')
})
