import t from 'tap'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
import { CloseCode, Limit } from '../../contracts/mod.ts'
import { LIMIT_DEFAULTS } from '../../edge/limits.ts'
import { LOOPBACK_LIMITS, setup, token } from '../helpers/setup.ts'
import { until, yclient } from '../helpers/client.ts'
import { RawSocket, frames, type Closed } from '../helpers/raw-socket.ts'
import { counterValue } from '../helpers/metric-value.ts'

// Request frames (sync step 1, query-awareness) are a few bytes the edge answers with an encode;
// the edges here run the default request limits, the ones a stock client must never reach.
const stack = await setup({ tenants: { acme: 64 * 1024 ** 2, globex: 64 * 1024 ** 2, initech: 64 * 1024 ** 2, hooli: 64 * 1024 ** 2 } })
t.teardown(() => stack.cleanup())
await stack.core()
const edge = await stack.edge({ limits: LOOPBACK_LIMITS })
const { connectionRequestBurst } = LIMIT_DEFAULTS

const refusals = (tenant: string, limit: Limit) => counterValue(edge.edge.metrics.limitRefusals, { tenant, limit })

/** A sync step 1 claiming {999: 0}: not empty, so the edge diffs the whole document against it each time (7 bytes on the wire). */
function foreignStateVector(): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, 1)
  encoding.writeVarUint(e, 999)
  encoding.writeVarUint(e, 0)
  return encoding.toUint8Array(e)
}

/** Sends `frame` until the socket is closed (each round waits a tick, so the edge answers in between); the frames sent and the close, or null when the edge never closed it. */
async function flood(socket: RawSocket, frame: Uint8Array, count = 2_000): Promise<{ sent: number; closed: Closed | null }> {
  let sent = 0
  while (sent < count && socket.isOpen) {
    for (let i = 0; i < 5 && socket.isOpen; i++, sent++) socket.send(frame)
    await new Promise((resolve) => setImmediate(resolve))
  }
  const closed = await Promise.race([socket.closed, new Promise<null>((resolve) => setTimeout(() => resolve(null), 2_000))])
  return { sent, closed }
}

t.test('edge - a socket looping sync step 1 requests is closed with 4429 while co-editors and another tenant keep editing', async (t) => {
  const acme = await token({ tenant: 'acme', sub: 'asker' })
  const writer = yclient(edge.url, 'asked-doc', await token({ tenant: 'acme' }))
  const reader = yclient(edge.url, 'asked-doc', await token({ tenant: 'acme' }))
  const globexTok = await token({ tenant: 'globex' })
  const other = yclient(edge.url, 'other-doc', globexTok)
  const otherReader = yclient(edge.url, 'other-doc', globexTok)
  t.teardown(() => (writer.destroy(), reader.destroy(), other.destroy(), otherReader.destroy()))
  await Promise.all([writer.synced(), reader.synced(), other.synced(), otherReader.synced()])
  writer.text.insert(0, 'y'.repeat(64 * 1024)) // a document worth diffing
  await until('the text reaches the reader', () => reader.text.length === 64 * 1024)

  const asker = await RawSocket.open(edge.url, 'asked-doc', acme)
  t.teardown(() => asker.close())
  const answeredBefore = asker.received.filter((k) => k === 'sync-step2').length
  const { sent, closed } = await flood(asker, frames.step1(foreignStateVector()))
  t.equal(closed?.code, CloseCode.RateLimited, `the asker is told it is over its rate after ${sent} requests (${closed?.reason})`)
  const answered = asker.received.filter((k) => k === 'sync-step2').length - answeredBefore
  t.ok(answered <= connectionRequestBurst + 1, `the edge diffed the document at most a burst of times (${answered} of ${sent} requests)`)
  t.equal(await refusals('acme', Limit.ConnectionRequests), 1, 'counted once with the tenant and limit')

  writer.text.insert(0, 'still here ')
  other.text.insert(0, 'globex too')
  await until('the co-editor edit reaches its reader', () => reader.text.toString().startsWith('still here '))
  await until("the other tenant's edit reaches its reader", () => otherReader.text.toString() === 'globex too')
  t.ok(writer.provider.wsconnected && reader.provider.wsconnected && other.provider.wsconnected, 'nobody else was closed')
  t.equal(await refusals('globex', Limit.ConnectionRequests), 0, 'the other tenant was never refused')
})

t.test('edge - a socket looping query-awareness is closed with 4429', async (t) => {
  const asker = await RawSocket.open(edge.url, 'presence-doc', await token({ tenant: 'initech' }))
  t.teardown(() => asker.close())
  const { sent, closed } = await flood(asker, frames.queryAwareness())
  t.equal(closed?.code, CloseCode.RateLimited, `closed after ${sent} queries`)
  t.ok(asker.awarenessFrames <= connectionRequestBurst + 1, `the edge encoded the presence states at most a burst of times (${asker.awarenessFrames})`)
  t.equal(await refusals('initech', Limit.ConnectionRequests), 1, 'counted once with the tenant and limit')
})

t.test('edge - stock clients that reconnect and resync on an interval stay under the default request limit', async (t) => {
  const tok = await token({ tenant: 'hooli' })
  // A stock client resyncing twice a second (apps that set resyncInterval use seconds), for longer than the burst lasts.
  // y-websocket's resync timer reads the global WebSocket, which Node 20 lacks.
  const globals = globalThis as { WebSocket?: unknown }
  if (!globals.WebSocket) (globals.WebSocket = WebSocket), t.teardown(() => delete globals.WebSocket)
  let requests = 0
  class CountingSocket extends WebSocket {
    override send(data: Uint8Array, ...rest: unknown[]): void {
      if (data[0] === 0 && data[1] === 0) requests++ // a sync step 1
      ;(super.send as (...args: unknown[]) => void)(data, ...rest)
    }
  }
  const doc = new Y.Doc()
  const resyncing = new WebsocketProvider(edge.url, 'resync-doc', doc, { params: { token: tok }, WebSocketPolyfill: CountingSocket as unknown as typeof globalThis.WebSocket, disableBc: true, resyncInterval: 500 })
  const peer = yclient(edge.url, 'resync-doc', tok)
  t.teardown(() => (resyncing.destroy(), doc.destroy(), peer.destroy()))
  let closes = 0
  resyncing.on('connection-close', () => closes++)
  await peer.synced()
  // Reconnects: each a new socket with its own requests.
  for (let i = 0; i < 3; i++) {
    const reconnecting = yclient(edge.url, 'resync-doc', tok)
    await reconnecting.synced()
    reconnecting.destroy()
  }
  const end = performance.now() + 6_000
  let i = 0
  while (performance.now() < end) {
    peer.text.insert(0, String(i++ % 10))
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
  t.ok(requests > connectionRequestBurst, `the resyncing client sent more sync step 1s (${requests}) than the burst`)
  t.equal(closes, 0, 'the resyncing client was never closed')
  t.equal(await refusals('hooli', Limit.ConnectionRequests), 0, 'never refused')
  await until('the resyncing client has every edit', () => doc.getText('t').length === i)
})

t.test('edge - a message above the read bound is cut unread (1006, counted); one between the frame limit and the bound still gets 4413', async (t) => {
  const maxMessageBytes = 64 * 1024
  const small = await stack.edge({ maxMessageBytes, limits: { ...LOOPBACK_LIMITS, connectionBytesBurst: 2 * maxMessageBytes } })
  const tok = await token({ tenant: 'acme', sub: 'big-writer' })
  const update = (bytes: number) => {
    const doc = new Y.Doc()
    let u: Uint8Array | null = null
    doc.once('update', (x: Uint8Array) => (u = x))
    doc.getText('t').insert(0, 'z'.repeat(bytes))
    return frames.update(u!)
  }
  const over = await RawSocket.open(small.url, 'read-bound', tok)
  over.send(update(maxMessageBytes + 1024))
  t.equal((await over.closed).code, CloseCode.MessageTooBig, 'above the frame limit, within the read bound: 4413 (a stock client does not resend)')

  const huge = await RawSocket.open(small.url, 'read-bound', tok)
  huge.send(update(4 * maxMessageBytes))
  t.equal((await huge.closed).code, 1006, 'above the read bound (the connection byte burst): uWS cuts it unread')
  await until('the cut is counted with the tenant', async () => (await counterValue(small.edge.metrics.framesCut, { tenant: 'acme' })) === 1)
  t.equal(await counterValue(small.edge.metrics.tooBigRejections, { tenant: 'acme' }), 1, 'only the read frame counts as a 4413')
  const after = await RawSocket.open(small.url, 'read-bound', tok)
  t.teardown(() => after.close())
  t.equal(await after.ping(), 'alive', 'the edge serves the next socket')
})
