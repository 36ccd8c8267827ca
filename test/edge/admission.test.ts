// Sockets upgrade at once and are authorized after open (edge-sockets.ts: a uWS defect drops sockets
// upgraded from a later tick). A slow identity provider (JWKS) makes the window visible.
import t from 'tap'
import { once } from 'node:events'
import * as decoding from 'lib0/decoding'
import WebSocket from 'ws'
import { CloseCode, Limit } from '../../contracts/mod.ts'
import { JWT_SECRET, setup, token } from '../helpers/setup.ts'
import { materializedText, until } from '../helpers/client.ts'
import { edit } from '../helpers/edits.ts'
import { frames } from '../helpers/raw-socket.ts'
import { JwksServer, signingKey } from '../helpers/jwks.ts'
import { counterValue } from '../helpers/metric-value.ts'

const KEY_SET_DELAY_MS = 500

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()
const jwks = await new JwksServer().start()
t.teardown(() => jwks.stop())
jwks.delayMs = KEY_SET_DELAY_MS
// Cooldown 0: each test's new key id makes the edge read the (slow) key set again.
const edge = await stack.edge({ tokens: { secret: JWT_SECRET, jwksUrl: jwks.url, jwksCooldownMs: 0 } })
const reader = await token({ tenant: 'acme' })

/** A token of a new identity-provider key, so checking it waits for the slow key set. */
async function slowToken(kid: string, published = true): Promise<string> {
  const key = await signingKey('RS256', kid)
  if (published) jwks.keys.push(key.jwk)
  return key.sign()
}

/** A raw socket; `step2s` holds the document updates of the sync step 2 frames the edge sent it. */
function connect(docId: string, tok: string) {
  const ws = new WebSocket(`${edge.url}/${docId}?token=${tok}`)
  const step2s: Uint8Array[] = []
  ws.on('message', (data: Buffer) => {
    const d = decoding.createDecoder(new Uint8Array(data))
    if (decoding.readVarUint(d) === 0 && decoding.readVarUint(d) === 1) step2s.push(decoding.readVarUint8Array(d))
  })
  const closed = once(ws, 'close').then(([code, reason]) => ({ code: code as number, reason: String(reason) }))
  return { ws, step2s, closed, opened: once(ws, 'open').then(() => performance.now()) }
}

t.test('edge - a socket opens before its token is checked; what it sent meanwhile is handled once the token passes', async (t) => {
  const tok = await slowToken('early-ok')
  const started = performance.now()
  const s = connect('early-ok', tok)
  t.teardown(() => s.ws.terminate())
  const openedAfter = (await s.opened) - started
  s.ws.send(frames.update(edit('early', 7001)))
  s.ws.send(frames.step1(new Uint8Array([0])))
  t.ok(openedAfter < KEY_SET_DELAY_MS, `open came before the key set answered (${openedAfter.toFixed(0)} ms)`)
  await until('the sync step 1 sent before the token was checked is answered', () => s.step2s.length > 0)
  t.ok(performance.now() - started >= KEY_SET_DELAY_MS, 'answered only after the token was checked')
  await until('the update sent before the token was checked is materialized', async () => (await materializedText(core.url, 'early-ok', reader)) === 'early')
})

t.test('edge - a socket that sends more than the cap before its token is checked is closed with 1013', async (t) => {
  const tok = await slowToken('early-flood')
  const refusedBefore = await counterValue(edge.edge.metrics.limitRefusals, { tenant: '', limit: Limit.UnauthenticatedBytes })
  const s = connect('early-flood', tok)
  t.teardown(() => s.ws.terminate())
  const started = await s.opened
  for (let i = 0; i < 3; i++) s.ws.send(frames.update(new Uint8Array(30 * 1024)))
  const close = await s.closed
  t.equal(close.code, CloseCode.TryAgainLater)
  t.match(close.reason, /before the token was checked/)
  t.ok(performance.now() - started < KEY_SET_DELAY_MS, 'closed without waiting for the token')
  t.equal(await counterValue(edge.edge.metrics.limitRefusals, { tenant: '', limit: Limit.UnauthenticatedBytes }), refusedBefore + 1, 'counted by its limit')
})

t.test('edge - empty frames before the token is checked count against the cap too: each held frame costs memory', async (t) => {
  const s = connect('early-empty', await slowToken('early-empty'))
  t.teardown(() => s.ws.terminate())
  const started = await s.opened
  for (let i = 0; i < 1_000; i++) s.ws.send(new Uint8Array(0))
  const close = await s.closed
  t.equal(close.code, CloseCode.TryAgainLater)
  t.match(close.reason, /before the token was checked/)
  t.ok(performance.now() - started < KEY_SET_DELAY_MS, 'closed without waiting for the token')
})

t.test('edge - a socket whose token check ends after the drain began is closed with 1012 (no admission failure)', async (t) => {
  const draining = await stack.edge({ tokens: { secret: JWT_SECRET, jwksUrl: jwks.url, jwksCooldownMs: 0 } })
  const ws = new WebSocket(`${draining.url}/late-admission?token=${await slowToken('late-admission')}`)
  const closed = once(ws, 'close').then(([code]) => code as number)
  await once(ws, 'open')
  await draining.edge.stop() // the token check is still waiting for the key set
  t.equal(await closed, CloseCode.ServiceRestart, 'told to reconnect elsewhere, as every socket of a drain')
  t.equal(await counterValue(draining.edge.metrics.admissionFailures), 0, 'no admission failure counted')
})

t.test('edge - what a socket sent before its token was refused is dropped with it', async (t) => {
  const bad = await slowToken('early-unknown-key', false)
  const s = connect('early-refused', bad)
  t.teardown(() => s.ws.terminate())
  await s.opened
  s.ws.send(frames.update(edit('evil', 7002)))
  t.equal((await s.closed).code, CloseCode.Unauthorized)
  // A good writer afterwards: once its text is materialized, the refused update would be too.
  const good = connect('early-refused', await token({ tenant: 'acme' }))
  t.teardown(() => good.ws.terminate())
  await good.opened
  good.ws.send(frames.update(edit('good', 7003)))
  await until('the good update is materialized', async () => (await materializedText(core.url, 'early-refused', reader)) !== null)
  t.equal(await materializedText(core.url, 'early-refused', reader), 'good', 'only the good update is in the document')
})
