import t from 'tap'
import { Edge } from '../../edge/edge.ts'
import { ENVELOPE_MARGIN_BYTES } from '../../edge/options.ts'
import { createEdgeMetrics } from '../../edge/metrics.ts'
import { createLogger } from '../../runtime/log.ts'
import { createRegistry } from '../../runtime/metrics.ts'
import { JWT_SECRET, setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()
const edge = await stack.edge()

t.test('edge - a frame limit that does not fit nats-server max_payload fails at construction', async (t) => {
  const nc = await stack.connect()
  const maxPayload = nc.info!.max_payload
  const options = { port: 0, host: '127.0.0.1', opsPort: 0, edgeId: 'limits', tokens: { secret: JWT_SECRET }, stateTimeoutMs: 2_000, resyncDelayMs: 500, publishAckTimeoutMs: 2_000, publishAttempts: 3, autoProvisionTenants: false }
  const make = (maxMessageBytes?: number) => new Edge({ ...options, maxMessageBytes }, nc, createLogger('test', 'silent'), createEdgeMetrics(createRegistry('edge', false)))
  t.throws(() => make(16 * 1024 * 1024), /max_payload/, '16 MiB frames do not fit an 8 MB max_payload')
  t.throws(() => make(maxPayload - ENVELOPE_MARGIN_BYTES + 1), /max_payload/, 'no room left for the envelope')
  t.doesNotThrow(() => make(maxPayload - ENVELOPE_MARGIN_BYTES), 'exactly the margin below max_payload')
  t.doesNotThrow(() => make(undefined), 'the default is derived from max_payload')
})

t.test('edge - an over-size update closes only its writer with 4413; a co-editor stays connected and keeps editing', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const writer = yclient(edge.url, 'too-big', tok)
  const coEditor = yclient(edge.url, 'too-big', tok)
  const reader = yclient(edge.url, 'too-big', tok)
  t.teardown(() => (writer.destroy(), coEditor.destroy(), reader.destroy()))
  await Promise.all([writer.synced(), coEditor.synced(), reader.synced()])
  let coEditorCloses = 0
  coEditor.provider.on('connection-close', () => coEditorCloses++)
  coEditor.text.insert(0, 'before ')
  await until('reader sees the co-editor', () => reader.text.toString() === 'before ')

  const writerClose = writer.nextClose()
  const writerGaveUp = new Promise<{ code: number }>((resolve) => writer.provider.on('closed', (event: { code: number }) => resolve(event)))
  const maxPayload = (await stack.connect()).info!.max_payload
  writer.text.insert(0, 'x'.repeat(maxPayload + 1024 * 1024)) // one update above max_payload, below uWS's read limit
  t.equal((await writerClose).code, 4413, 'the writer is told its update is too big')
  t.equal((await writerGaveUp).code, 4413, 'the stock client stops reconnecting (no resend loop)')

  coEditor.text.insert(coEditor.text.length, 'after')
  await until('reader sees the co-editor edit made after the rejection', () => reader.text.toString() === 'before after', 20_000)
  await until('materialized without the over-size update', async () => (await materializedText(core.url, 'too-big', tok)) === 'before after', 20_000)
  t.equal(coEditorCloses, 0, 'the co-editor was never disconnected')
  t.ok(coEditor.provider.wsconnected, 'the co-editor is still connected')
  t.equal(coEditor.text.toString(), 'before after', 'the co-editor never got the over-size update')
  const rejected = (await edge.edge.metrics.tooBigRejections.get()).values.find((v) => v.labels.tenant === 'acme')
  t.equal(rejected?.value, 1, 'counted once, with the tenant label')
})

t.test('edge - a document whose state is larger than max_payload opens on a fresh edge', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const maxPayload = (await stack.connect()).info!.max_payload
  const writer = yclient(edge.url, 'big-doc', tok)
  await writer.synced()
  // Several updates, each under the frame limit, that add up to more than one NATS message.
  const chunk = Math.floor(maxPayload / 3)
  let expected = ''
  for (const letter of ['a', 'b', 'c', 'd', 'e']) {
    const text = letter.repeat(chunk)
    writer.text.insert(writer.text.length, text)
    expected += text
  }
  t.ok(expected.length > maxPayload, `the document (${expected.length} bytes of text) is larger than max_payload (${maxPayload})`)
  await until('materialized', async () => (await materializedText(core.url, 'big-doc', tok))?.length === expected.length, 120_000)
  writer.destroy() // the room on the first edge closes: only core can serve the state now

  const fresh = await stack.edge({ stateTimeoutMs: 10_000 })
  const reader = yclient(fresh.url, 'big-doc', tok)
  t.teardown(() => reader.destroy())
  await until('a fresh stock client syncs the whole document', () => reader.text.length === expected.length, 60_000)
  t.ok(reader.text.toString() === expected, 'every character arrived in order')
})
