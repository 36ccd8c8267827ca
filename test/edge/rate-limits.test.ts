import t from 'tap'
import * as Y from 'yjs'
import WebSocket from 'ws'
import { request } from 'node:http'
import { CloseCode, Limit } from '../../contracts/mod.ts'
import { LOOPBACK_LIMITS, setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'
import { RawSocket, frames, upgradeStatus } from '../helpers/raw-socket.ts'
import { counterValue } from '../helpers/metric-value.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()

/** A writer of its own Y.Doc: each call gives the next update (an insert of `bytes` characters). */
function writer(clientID: number) {
  const doc = new Y.Doc()
  doc.clientID = clientID
  return (bytes = 1): Uint8Array => {
    let update: Uint8Array | null = null
    doc.once('update', (u: Uint8Array) => (update = u))
    doc.getText('t').insert(0, 'x'.repeat(bytes))
    return update!
  }
}

const refusals = (edge: Awaited<ReturnType<typeof stack.edge>>, tenant: string, limit: Limit) => counterValue(edge.edge.metrics.limitRefusals, { tenant, limit })

t.test('edge - a socket over its update rate is closed with 4429; a co-editor keeps editing', async (t) => {
  const edge = await stack.edge({ limits: { ...LOOPBACK_LIMITS, connectionUpdatesPerS: 20, connectionUpdateBurst: 40 } })
  const tok = await token({ tenant: 'acme' })
  const flooder = await RawSocket.open(edge.url, 'rate-doc', tok)
  const coEditor = yclient(edge.url, 'rate-doc', tok)
  const reader = yclient(edge.url, 'rate-doc', tok)
  t.teardown(() => (flooder.close(), coEditor.destroy(), reader.destroy()))
  await Promise.all([coEditor.synced(), reader.synced()])
  const next = writer(9001)
  for (let i = 0; i < 200 && flooder.isOpen; i++) flooder.send(frames.update(next()))
  const closed = await flooder.closed
  t.equal(closed.code, CloseCode.RateLimited, `the flooder is told it is over its rate (${closed.reason})`)
  t.equal(await refusals(edge, 'acme', Limit.ConnectionUpdates), 1, 'counted once with tenant and limit')
  coEditor.text.insert(0, 'still here')
  await until('the co-editor edit reaches the reader', () => reader.text.toString().includes('still here'))
  t.ok(coEditor.provider.wsconnected, 'the co-editor was not closed')
})

t.test('edge - a socket over its byte rate is closed with 4429', async (t) => {
  const edge = await stack.edge({ maxMessageBytes: 64 * 1024, limits: { ...LOOPBACK_LIMITS, connectionBytesPerS: 32 * 1024, connectionBytesBurst: 64 * 1024 } })
  const tok = await token({ tenant: 'acme' })
  const flooder = await RawSocket.open(edge.url, 'bytes-doc', tok)
  t.teardown(() => flooder.close())
  const next = writer(9002)
  for (let i = 0; i < 20 && flooder.isOpen; i++) flooder.send(frames.update(next(16 * 1024)))
  t.equal((await flooder.closed).code, CloseCode.RateLimited, 'closed for bytes, not for size (each frame is under the frame limit)')
  t.equal(await refusals(edge, 'acme', Limit.ConnectionBytes), 1)
})

t.test('edge - one user holding the most sockets gets 4430 for the next; a slot frees when one closes', async (t) => {
  const edge = await stack.edge({ limits: { ...LOOPBACK_LIMITS, userConnections: 2 } })
  const tok = await token({ tenant: 'acme', sub: 'many-tabs' })
  const first = await RawSocket.open(edge.url, 'tab-1', tok)
  const second = await RawSocket.open(edge.url, 'tab-2', tok)
  const otherUser = await RawSocket.open(edge.url, 'tab-1', await token({ tenant: 'acme', sub: 'someone-else' }))
  t.teardown(() => (first.close(), second.close(), otherUser.close()))
  await t.rejects(RawSocket.open(edge.url, 'tab-3', tok), /closed before open: 4430|closed while syncing: 4430/, 'the third socket of the user is refused')
  t.equal(await refusals(edge, 'acme', Limit.UserConnections), 1)
  first.close()
  await first.closed
  await until('the freed slot takes a new socket', async () => {
    const third = await RawSocket.open(edge.url, 'tab-3', tok).catch(() => null)
    third?.close()
    return third !== null
  })
})

t.test('edge - connects from one IP past its rate get 429 before any token work; other IPs (proxy header) are not held up', async (t) => {
  const edge = await stack.edge({ clientIpHeader: 'x-forwarded-for', limits: { ipConnectsPerS: 1, ipConnectBurst: 3 } })
  const tok = await token({ tenant: 'acme' })
  const statuses: number[] = []
  for (let i = 0; i < 5; i++) statuses.push(await upgradeStatus(`${edge.url}/ip-doc?token=${tok}`))
  t.same(statuses.slice(0, 3), [101, 101, 101], 'the burst passes')
  t.same(statuses.slice(3), [429, 429], 'then 429')
  t.equal(await refusals(edge, '', Limit.IpConnects), 2, 'counted without a tenant (refused before the token is read)')
  const other = await new Promise<number>((resolve) => {
    const ws = new WebSocket(`${edge.url}/ip-doc?token=${tok}`, { headers: { 'x-forwarded-for': '10.0.0.1, 203.0.113.7' } })
    ws.once('open', () => (resolve(101), ws.close()))
    ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0))
  })
  t.equal(other, 101, 'another client address (the last x-forwarded-for entry, which the proxy appends) has its own budget')
  const res = await fetch(`${edge.url.replace('ws', 'http')}/v1/docs/ip-doc/updates`, { method: 'POST', headers: { authorization: `Bearer ${tok}`, 'idempotency-key': 'k1' }, body: new Uint8Array(writer(9003)()) })
  t.equal(res.status, 429, 'HTTP ingest from the same IP is throttled too')
  t.equal(res.headers.get('retry-after'), '1')
})

t.test('edge - a document past its size limit takes no more edits: 4414 on the socket, 413 over HTTP', async (t) => {
  const edge = await stack.edge({ limits: { ...LOOPBACK_LIMITS, maxDocumentBytes: 48 * 1024 } })
  const tok = await token({ tenant: 'acme' })
  const a = yclient(edge.url, 'full-doc', tok)
  const b = yclient(edge.url, 'full-doc', tok)
  t.teardown(() => (a.destroy(), b.destroy()))
  await Promise.all([a.synced(), b.synced()])
  a.text.insert(0, 'a'.repeat(20 * 1024))
  a.text.insert(0, 'b'.repeat(20 * 1024))
  await until('both edits reach b', () => b.text.length === 40 * 1024)
  const aClosed = a.nextClose()
  a.text.insert(0, 'c'.repeat(20 * 1024))
  t.equal((await aClosed).code, CloseCode.DocumentTooLarge, 'the writer past the limit is told the document is full')
  const res = await fetch(`${edge.url.replace('ws', 'http')}/v1/docs/full-doc/updates`, { method: 'POST', headers: { authorization: `Bearer ${tok}`, 'idempotency-key': 'full-1' }, body: new Uint8Array(writer(9004)(20 * 1024)) })
  t.equal(res.status, 413, 'HTTP ingest to the full document: 413')
  await until('materialized without the refused edits', async () => (await materializedText(core.url, 'full-doc', tok))?.length === 40 * 1024, 20_000)
  t.equal(await refusals(edge, 'acme', Limit.DocumentBytes), 2)
  t.equal(b.text.length, 40 * 1024, 'the co-editor never got the refused edit')
})

t.test('edge - an HTTP update with a bad token is refused before its body is read', async (t) => {
  const edge = await stack.edge()
  const url = new URL(`${edge.url.replace('ws', 'http')}/v1/docs/slow-body/updates`)
  // Headers and a first part of a 4 MiB body; the rest never comes. A refusal must not wait for it.
  const status = await new Promise<number>((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path: url.pathname, method: 'POST', headers: { authorization: 'Bearer not-a-token', 'idempotency-key': 'k', 'content-length': String(4 * 1024 * 1024) } }, (res) => resolve(res.statusCode ?? 0))
    req.on('error', reject)
    req.write(Buffer.alloc(256 * 1024))
  })
  t.equal(status, 401)
})

t.test("edge - one tenant's flood is cut at its tenant rate and never slows another tenant's editors", async (t) => {
  const edge = await stack.edge({ maxMessageBytes: 256 * 1024, limits: { ...LOOPBACK_LIMITS, tenantUpdatesPerS: 100, tenantBytesPerS: 256 * 1024 } })
  const floodTok = await token({ tenant: 'globex', sub: 'flooder' })
  let flooding = true
  let floodCloses = 0
  const flood = async (n: number) => {
    const next = writer(10_000 + n)
    while (flooding) {
      const socket = await RawSocket.open(edge.url, `flood-${n}`, floodTok).catch(() => null)
      if (!socket) {
        await new Promise((resolve) => setTimeout(resolve, 20))
        continue
      }
      while (flooding && socket.isOpen) {
        for (let i = 0; i < 8 && socket.isOpen; i++) socket.send(frames.update(next(8 * 1024)))
        await new Promise((resolve) => setImmediate(resolve))
      }
      socket.close()
      floodCloses++
    }
  }
  const floods = Array.from({ length: 6 }, (_, n) => flood(n))
  t.teardown(() => {
    flooding = false
  })

  const calmTok = await token({ tenant: 'acme', sub: 'calm' })
  const typist = yclient(edge.url, 'calm-doc', calmTok)
  const reader = yclient(edge.url, 'calm-doc', calmTok)
  t.teardown(() => (typist.destroy(), reader.destroy()))
  await Promise.all([typist.synced(), reader.synced()])
  let calmCloses = 0
  typist.provider.on('connection-close', () => calmCloses++)
  reader.provider.on('connection-close', () => calmCloses++)
  const latencies: number[] = []
  for (let i = 0; i < 40; i++) {
    const sent = performance.now()
    typist.text.insert(typist.text.length, String(i % 10))
    await until('the calm edit reaches the reader', () => reader.text.length === i + 1, 20_000)
    latencies.push(performance.now() - sent)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  flooding = false
  await Promise.all(floods)
  latencies.sort((x, y) => x - y)
  const p95 = latencies[Math.floor(latencies.length * 0.95)]!
  t.comment(`calm fanout p50 ${latencies[20]!.toFixed(1)} ms, p95 ${p95.toFixed(1)} ms; flood sockets closed ${floodCloses}`)
  t.ok(floodCloses > 0, 'the flood was cut')
  t.ok((await refusals(edge, 'globex', Limit.TenantBytes)) + (await refusals(edge, 'globex', Limit.TenantUpdates)) > 0, 'by its tenant limit, counted with its tenant label')
  t.equal(await refusals(edge, 'acme', Limit.TenantBytes) + (await refusals(edge, 'acme', Limit.TenantUpdates)), 0, 'the calm tenant was never refused')
  t.equal(calmCloses, 0, 'the calm clients were never closed')
  t.ok(p95 < 250, `the calm tenant's fanout p95 stays under 250 ms during the flood (${p95.toFixed(1)} ms)`)
  await until('the calm edits are materialized', async () => (await materializedText(core.url, 'calm-doc', calmTok))?.length === 40, 20_000)
})
