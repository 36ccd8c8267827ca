import t from 'tap'
import { readFileSync } from 'node:fs'
import { Writable } from 'node:stream'
import { SignJWT, exportSPKI } from 'jose'
import { parse } from 'yaml'
import { z } from 'zod'
import { CloseCode, HTTP_INGEST_PATH } from '../../contracts/mod.ts'
import { Edge } from '../../edge/edge.ts'
import { createEdgeMetrics } from '../../edge/metrics.ts'
import { ConfigError, JWT_VARS, JwtConfig, loadConfig } from '../../runtime/config.ts'
import { KeySetUnavailable, tokenPolicy, verifyToken, type TokenPolicy } from '../../runtime/jwt.ts'
import { REDACTED, createLogger } from '../../runtime/log.ts'
import { createRegistry } from '../../runtime/metrics.ts'
import { JWT_SECRET, setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'
import { edit } from '../helpers/edits.ts'
import { JwksServer, editorClaims, signingKey, verdict } from '../helpers/jwks.ts'

const SECRET = 'a-test-secret-of-at-least-32-bytes!!'
const claims = editorClaims

const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url')
const exp = () => Math.floor(Date.now() / 1000) + 600

t.test('runtime - RS256 and ES256 tokens signed by a key of the JWKS are accepted beside HS256 dev tokens', async (t) => {
  const jwks = await new JwksServer().start()
  t.teardown(() => jwks.stop())
  const rsa = await signingKey('RS256', 'rsa-1')
  const ec = await signingKey('ES256', 'ec-1')
  jwks.keys = [rsa.jwk, ec.jwk]
  const policy: TokenPolicy = { secret: SECRET, jwksUrl: jwks.url }
  t.equal(await verdict(await rsa.sign(), policy), 'accepted', 'RS256')
  t.equal(await verdict(await ec.sign(), policy), 'accepted', 'ES256')
  t.match(await verifyToken(await ec.sign({ ...claims, sub: 'ec-user' }), policy), { ...claims, sub: 'ec-user', iat: Number, exp: Number }, 'its claims come back')
  t.equal(jwks.fetches, 1, 'the key set is fetched once and cached')
  const hs = await new SignJWT({ ...claims }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime(exp()).sign(new TextEncoder().encode(SECRET))
  t.equal(await verdict(hs, policy), 'accepted', 'HS256 with the secret still works')
  t.match(await verdict(await rsa.sign({ ...claims, tenant: 'Not A Tenant!' }), policy), /^bad claims: tenant/, 'claims are checked as for HS256')
  t.equal(await verdict(await rsa.sign(claims, -60), policy), 'token expired')
  t.match(await verdict(await rsa.sign(), { ...policy, audience: 'docflow-edge' }), /aud/, 'aud is checked as for HS256')
  t.match(await verdict(await rsa.sign(), { secret: SECRET }), /RS256 needs a key set.*DOCFLOW_JWKS_URL/, 'RS256 without a JWKS URL says what is missing')
})

t.test('runtime - a rotated key works without restart; the removed key and an unknown kid are refused', async (t) => {
  const jwks = await new JwksServer().start()
  t.teardown(() => jwks.stop())
  const old = await signingKey('RS256', 'key-2024')
  const next = await signingKey('ES256', 'key-2025')
  jwks.keys = [old.jwk]
  // One verifier for the whole test, as in an edge process: only the key set changes.
  const policy: TokenPolicy = { secret: SECRET, jwksUrl: jwks.url, jwksCooldownMs: 0 }
  const oldToken = await old.sign()
  t.equal(await verdict(oldToken, policy), 'accepted', 'before rotation')
  jwks.keys = [next.jwk]
  t.equal(await verdict(await next.sign(), policy), 'accepted', 'a token of the new kid fetches the set again')
  t.equal(jwks.fetches, 2)
  t.match(await verdict(oldToken, policy), /no key in the key set/, 'the removed key is refused')
  const stranger = await signingKey('ES256', 'key-2025')
  t.equal(await verdict(await stranger.sign(), policy), 'invalid token', 'the right kid with another key: bad signature')
  const unknown = await signingKey('RS256', 'never-published')
  t.match(await verdict(await unknown.sign(), policy), /no key in the key set/, 'an unknown kid')

  // The cooldown caps refetches: a flood of unknown kids is one fetch, not one per token.
  const guarded: TokenPolicy = { secret: SECRET, jwksUrl: jwks.url, jwksCooldownMs: 60_000 }
  t.equal(await verdict(await next.sign(), guarded), 'accepted')
  const before = jwks.fetches
  for (let i = 0; i < 5; i++) t.match(await verdict(await unknown.sign(), guarded), /no key in the key set/)
  t.equal(jwks.fetches, before, 'no fetch inside the cooldown')
})

t.test('runtime - alg none, unlisted algorithms and an HS256 token keyed with the public key are refused', async (t) => {
  const jwks = await new JwksServer().start()
  t.teardown(() => jwks.stop())
  const rsa = await signingKey('RS256', 'rsa-1')
  const ec = await signingKey('ES256', 'ec-1')
  jwks.keys = [rsa.jwk, ec.jwk]
  const policy: TokenPolicy = { secret: SECRET, jwksUrl: jwks.url, jwksCooldownMs: 0 }
  const payload = b64({ ...claims, exp: exp() })
  t.equal(await verdict(`${b64({ alg: 'none', typ: 'JWT' })}.${payload}.`, policy), 'token algorithm "none" not accepted (HS256, RS256, ES256)')
  t.match(await verdict(`${b64({ alg: 'None' })}.${payload}.`, policy), /algorithm "None" not accepted/)
  t.match(await verdict(`${b64({ typ: 'JWT' })}.${payload}.`, policy), /algorithm undefined not accepted/, 'no alg at all')
  const hs512 = await new SignJWT({ ...claims }).setProtectedHeader({ alg: 'HS512' }).setExpirationTime(exp()).sign(new TextEncoder().encode(SECRET.repeat(2)))
  t.match(await verdict(hs512, policy), /"HS512" not accepted/)

  // Algorithm confusion: the public key is public, so an HMAC "signed" with it proves nothing.
  const pem = await exportSPKI(rsa.publicKey)
  for (const [what, secret] of [['PEM', pem], ['JWK JSON', JSON.stringify(rsa.jwk)], ['modulus', rsa.jwk.n!]] as const) {
    const confused = await new SignJWT({ ...claims }).setProtectedHeader({ alg: 'HS256', kid: 'rsa-1' }).setExpirationTime(exp()).sign(new TextEncoder().encode(secret))
    t.equal(await verdict(confused, policy), 'invalid token', `HS256 keyed with the public key (${what})`)
  }
  // An ES256 header on an RSA kid: the key set gives no key of another type.
  const rsaSigned = await rsa.sign()
  const [, body, signature] = rsaSigned.split('.')
  t.match(await verdict(`${b64({ alg: 'ES256', kid: 'rsa-1' })}.${body}.${signature}`, policy), /no key in the key set/)
  t.equal(await verdict(rsaSigned, policy), 'accepted', 'the same key with its own algorithm')
})

t.test('runtime - a JWKS that cannot be read is KeySetUnavailable (retry), not an invalid token', async (t) => {
  const jwks = await new JwksServer().start()
  const rsa = await signingKey('RS256', 'rsa-1')
  jwks.keys = [rsa.jwk]
  const hs = await new SignJWT({ ...claims }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime(exp()).sign(new TextEncoder().encode(SECRET))

  jwks.mode = 'error'
  const policy: TokenPolicy = { secret: SECRET, jwksUrl: jwks.url }
  const err = await verifyToken(await rsa.sign(), policy).catch((e: unknown) => e)
  t.type(err, KeySetUnavailable, 'HTTP 500 from the JWKS URL')
  t.equal((err as Error).name, 'KeySetUnavailable')
  t.ok((err as Error).cause, 'jose error kept as cause')
  t.match((err as Error).message, jwks.url, 'names the URL')

  jwks.mode = 'hang'
  const started = Date.now()
  t.equal(await verdict(await rsa.sign(), { ...policy, jwksTimeoutMs: 300 }), 'key set unavailable', 'no answer within jwksTimeoutMs')
  t.ok(Date.now() - started < 3_000, `gave up after ${Date.now() - started} ms`)

  await jwks.stop()
  t.equal(await verdict(await rsa.sign(), { ...policy, jwksTimeoutMs: 1_000 }), 'key set unavailable', 'connection refused')
  t.equal(await verdict(hs, policy), 'accepted', 'HS256 tokens do not need the key set')
  t.match(await verdict('not.a.jwt', policy), /invalid token/, 'garbage is still the token')
})

t.test('runtime - DOCFLOW_JWKS_URL is https (http only on this machine) and reaches the token policy with its cache settings', async (t) => {
  const Config = z.object(JwtConfig)
  const load = (env: NodeJS.ProcessEnv) => loadConfig(Config, JWT_VARS, { DOCFLOW_JWT_SECRET: SECRET, ...env })
  t.throws(() => load({ DOCFLOW_JWKS_URL: 'http://idp.example.com/jwks.json' }), { name: ConfigError.name, message: /DOCFLOW_JWKS_URL=.*https:\/\// })
  t.throws(() => load({ DOCFLOW_JWKS_URL: 'not a url' }), /DOCFLOW_JWKS_URL/)
  t.throws(() => load({ DOCFLOW_JWKS_URL: 'https://idp.example.com/jwks.json', DOCFLOW_JWKS_CACHE_MAX_AGE_MS: 'ten minutes' }), /DOCFLOW_JWKS_CACHE_MAX_AGE_MS/)
  for (const url of ['https://idp.example.com/.well-known/jwks.json', 'http://127.0.0.1:8443/jwks', 'http://localhost/jwks']) t.equal(load({ DOCFLOW_JWKS_URL: url }).jwksUrl, url)
  t.match(tokenPolicy(load({})), { jwksUrl: undefined, jwksTimeoutMs: 5_000, jwksCacheMaxAgeMs: 600_000, jwksCooldownMs: 30_000 }, 'unset: HS256 only; defaults')
  const policy = tokenPolicy(load({ DOCFLOW_JWKS_URL: 'https://idp.example.com/jwks', DOCFLOW_JWKS_TIMEOUT_MS: '2000', DOCFLOW_JWKS_CACHE_MAX_AGE_MS: '300000', DOCFLOW_JWKS_COOLDOWN_MS: '10000' }))
  t.match(policy, { jwksUrl: 'https://idp.example.com/jwks', jwksTimeoutMs: 2_000, jwksCacheMaxAgeMs: 300_000, jwksCooldownMs: 10_000 })
})

/** A logger whose lines land in `lines` (every level). */
function capturedLogger(service: string) {
  const lines: string[] = []
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString())
      done()
    },
  })
  return { log: createLogger(service, 'trace', destination), lines }
}

t.test('runtime - fields that could carry a token are censored in log lines', async (t) => {
  const { log, lines } = capturedLogger('redact-test')
  const secret = 'eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.c2lnbmF0dXJl'
  log.info({ token: secret }, 'a token field')
  log.info({ socket: { token: secret } }, 'nested')
  log.warn({ authorization: `Bearer ${secret}` }, 'a header')
  log.warn({ headers: { authorization: `Bearer ${secret}`, cookie: `session=${secret}` } }, 'headers')
  log.warn({ req: { headers: { authorization: `Bearer ${secret}` } } }, 'request headers')
  log.error({ url: `/v1/docs/x?token=${secret}&at=3`, path: `/doc?access_token=${secret}` }, 'URLs')
  t.equal(lines.length, 6)
  for (const line of lines) t.notOk(line.includes(secret), line)
  t.match(lines[5], /"url":"\/v1\/docs\/x\?token=\[redacted\]&at=3"/, 'the rest of the URL stays')
  t.ok(lines.every((l) => l.includes(REDACTED)))
})

// End to end: a real edge (its log lines captured) and core, verifying against a local JWKS.
const stack = await setup()
const jwks = await new JwksServer().start()
const rsa = await signingKey('RS256', 'prod-rsa')
const ec = await signingKey('ES256', 'prod-ec')
jwks.keys = [rsa.jwk, ec.jwk]
const tokens: TokenPolicy = { secret: JWT_SECRET, jwksUrl: jwks.url, jwksCooldownMs: 0 }
const core = await stack.core({ tokens })
const { log, lines } = capturedLogger('edge')
const edge = new Edge(
  { port: 0, host: '127.0.0.1', opsPort: 0, editPartitions: stack.partitions, edgeId: 'jwks-edge', tokens, stateTimeoutMs: 2_000, resyncDelayMs: 500, publishAckTimeoutMs: 2_000, publishAttempts: 3, autoProvisionTenants: false },
  await stack.connect(),
  log,
  createEdgeMetrics(createRegistry('edge', false)),
)
const port = await edge.start()
// One teardown, in order: the edge stops while NATS still runs (stopped after, it dialled a
// server already gone and crashed the file with an unhandled ConnectionError).
t.teardown(async () => {
  await edge.stop()
  await jwks.stop()
  await stack.cleanup()
})
const wsUrl = `ws://127.0.0.1:${port}`
const httpUrl = `http://127.0.0.1:${port}`
const closeOf = async (tok: string, docId = 'jwks-doc') => {
  const c = yclient(wsUrl, docId, tok)
  try {
    return await c.nextClose()
  } finally {
    c.destroy()
  }
}
const post = async (tok: string, docId: string, key: string) =>
  (await fetch(`${httpUrl}${HTTP_INGEST_PATH}/${encodeURIComponent(docId)}/updates`, { method: 'POST', body: edit('posted', 777) as BodyInit, headers: { authorization: `Bearer ${tok}`, 'idempotency-key': key } })).status
const readStatus = async (tok: string, docId: string) => (await fetch(`${core.url}/v1/docs/${encodeURIComponent(docId)}/state`, { headers: { authorization: `Bearer ${tok}` } })).status
const refused: string[] = []

t.test('edge - an RS256 token of the JWKS connects over a real socket; its edits reach core, read back with an ES256 token', async (t) => {
  const c = yclient(wsUrl, 'jwks-doc', await rsa.sign())
  t.teardown(() => c.destroy())
  await c.synced()
  c.text.insert(0, 'signed by the identity provider')
  const reader = await ec.sign()
  await until('the edit is materialized and readable with an ES256 token', async () => (await materializedText(core.url, 'jwks-doc', reader).catch(() => null)) === 'signed by the identity provider')
  t.equal(await post(await ec.sign(), 'jwks-doc', 'jwks-1'), 202, 'HTTP ingest takes it too')
  const dev = yclient(wsUrl, 'jwks-doc', await token({ tenant: 'acme' }))
  t.teardown(() => dev.destroy())
  await dev.synced()
  t.match(dev.text.toString(), /signed by the identity provider/, 'an HS256 dev token works beside it')
})

t.test('edge - refused tokens: 4401 on sockets, 401 on HTTP and the read API', async (t) => {
  const stranger = await signingKey('RS256', 'prod-rsa')
  const none = `${b64({ alg: 'none' })}.${b64({ ...claims, exp: exp() })}.`
  const confused = await new SignJWT({ ...claims }).setProtectedHeader({ alg: 'HS256', kid: 'prod-rsa' }).setExpirationTime(exp()).sign(new TextEncoder().encode(await exportSPKI(rsa.publicKey)))
  const expired = await rsa.sign(claims, -120)
  for (const tok of [await stranger.sign(), none, confused, expired]) {
    refused.push(tok)
    t.equal((await closeOf(tok)).code, CloseCode.Unauthorized, tok.slice(0, 20))
    t.equal(await post(tok, 'jwks-doc', `refused-${refused.length}`), 401)
    t.equal(await readStatus(tok, 'jwks-doc'), 401)
  }
})

t.test('edge - while the JWKS URL fails, sockets get 1013 and HTTP 503, and a new key works once it answers', async (t) => {
  const late = await signingKey('ES256', 'published-later')
  const tok = await late.sign()
  refused.push(tok)
  jwks.mode = 'error'
  const close = await closeOf(tok)
  t.equal(close.code, CloseCode.TryAgainLater, `socket: ${close.code} ${close.reason}`)
  t.equal(await post(tok, 'jwks-doc', 'while-down'), 503, 'HTTP ingest')
  t.equal(await readStatus(tok, 'jwks-doc'), 503, 'read API')
  jwks.mode = 'ok'
  jwks.keys = [rsa.jwk, ec.jwk, late.jwk]
  const c = yclient(wsUrl, 'jwks-doc', tok)
  t.teardown(() => c.destroy())
  await c.synced()
  t.pass('the same token connects once its key is published, without a restart')
})

t.test('edge - no log line carries a refused token', async (t) => {
  t.ok(
    lines.some((l) => l.includes('KeySetUnavailable')),
    'the unavailable key set was logged (with its cause)',
  )
  for (const tok of refused) {
    const signature = tok.split('.')[2]
    const leaks = lines.filter((l) => l.includes(tok) || (signature && l.includes(signature)))
    t.same(leaks, [], `${tok.slice(0, 20)}… in no line of ${lines.length}`)
  }
})

t.test('helm - edge and core both get DOCFLOW_JWKS_URL from auth.jwksUrl, only when it is set', async (t) => {
  const chart = new URL('../../helm/docflow/', import.meta.url)
  t.equal((parse(readFileSync(new URL('values.yaml', chart), 'utf8')) as { auth: { jwksUrl: string } }).auth.jwksUrl, '', 'HS256 only by default')
  for (const component of ['edge', 'core']) {
    const template = readFileSync(new URL(`templates/${component}-deployment.yaml`, chart), 'utf8')
    t.match(template, /\{\{- with \.Values\.auth\.jwksUrl \}\}\n\s+- name: DOCFLOW_JWKS_URL\n\s+value: \{\{ \. \| quote \}\}\n\s+\{\{- end \}\}/, component)
  }
})
