import t, { type Test } from 'tap'
import type { TokenPolicy } from '../../runtime/jwt.ts'
import { JwksServer, signingKey, verdict } from '../helpers/jwks.ts'

// An identity-provider outage: the last key set read keeps verifying, and the JWKS URL is asked at
// most once per cooldown however many tokens arrive (a connection flood is not a flood on the IdP).

const SECRET = 'a-test-secret-of-at-least-32-bytes!!'
const COOLDOWN_MS = 1_000

const verdicts = async (tokens: string[], policy: TokenPolicy) => [...new Set(await Promise.all(tokens.map((tok) => verdict(tok, policy))))]
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

async function idp(t: Test) {
  const jwks = await new JwksServer().start()
  t.teardown(() => jwks.stop())
  const key = await signingKey('RS256', 'idp-1')
  jwks.keys = [key.jwk]
  return { jwks, key }
}

t.test('runtime - past the cache max age, an IdP outage keeps the last key set: tokens accepted, one fetch per cooldown', async (t) => {
  const { jwks, key } = await idp(t)
  const policy: TokenPolicy = { secret: SECRET, jwksUrl: jwks.url, jwksCacheMaxAgeMs: 1_000, jwksCooldownMs: COOLDOWN_MS }
  const tokens = await Promise.all(Array.from({ length: 20 }, () => key.sign()))
  t.equal(await verdict(tokens[0]!, policy), 'accepted', 'key set read')
  jwks.mode = 'error'
  await sleep(1_100)
  const before = jwks.fetches
  t.same(await verdicts(tokens, policy), ['accepted'], '20 at once, the cached key set stale and the IdP down')
  for (const tok of tokens) t.equal(await verdict(tok, policy), 'accepted')
  t.equal(jwks.fetches - before, 1, 'one fetch attempt for 40 verifications')
  await sleep(COOLDOWN_MS + 100)
  t.same(await verdicts(tokens, policy), ['accepted'], 'still down a cooldown later')
  t.equal(jwks.fetches - before, 2, 'one more attempt per cooldown')

  // The IdP is back with the key rotated: the next attempt replaces the set.
  const next = await signingKey('ES256', 'idp-2')
  jwks.keys = [next.jwk]
  jwks.mode = 'ok'
  await sleep(COOLDOWN_MS + 100)
  t.equal(await verdict(await next.sign(), policy), 'accepted', 'the new key')
  t.match(await verdict(tokens[0]!, policy), /no key in the key set/, 'the removed key, once the set is read again')
})

t.test('runtime - while the IdP fails, unknown kids cost one fetch per cooldown and are KeySetUnavailable; known kids still pass', async (t) => {
  const { jwks, key } = await idp(t)
  const policy: TokenPolicy = { secret: SECRET, jwksUrl: jwks.url, jwksCooldownMs: COOLDOWN_MS }
  t.equal(await verdict(await key.sign(), policy), 'accepted')
  const forger = await signingKey('RS256', 'forged')
  const forged = await Promise.all(Array.from({ length: 50 }, () => forger.sign()))
  const valid = await key.sign()
  jwks.mode = 'error'
  await sleep(COOLDOWN_MS + 100)
  const before = jwks.fetches
  t.same(await verdicts(forged, policy), ['key set unavailable'], '50 forged kids at once: a new key cannot be told from a forged one')
  for (const tok of forged) t.equal(await verdict(tok, policy), 'key set unavailable')
  t.equal(await verdict(valid, policy), 'accepted', 'a known kid meanwhile')
  t.equal(jwks.fetches - before, 1, 'one fetch attempt for 100 unknown kids')

  // Rotation still works: once the IdP answers, a new kid is fetched once, then the cooldown holds.
  const rotated = await signingKey('RS256', 'rotated')
  jwks.keys = [key.jwk, rotated.jwk]
  jwks.mode = 'ok'
  await sleep(COOLDOWN_MS + 100)
  t.equal(await verdict(await rotated.sign(), policy), 'accepted', 'a rotated key')
  t.same(await verdicts(forged, policy), ['no key in the key set for this token (kid / alg)'], 'forged kids are token errors again')
  t.equal(jwks.fetches - before, 2, 'one fetch for the rotation, none for the forged kids inside the cooldown')
})

t.test('runtime - with no key set ever read, a failing IdP is asked once per cooldown and every RS/ES token is KeySetUnavailable', async (t) => {
  const { jwks, key } = await idp(t)
  jwks.mode = 'error'
  const policy: TokenPolicy = { secret: SECRET, jwksUrl: jwks.url, jwksCooldownMs: COOLDOWN_MS }
  const tokens = await Promise.all(Array.from({ length: 20 }, () => key.sign()))
  t.same(await verdicts(tokens, policy), ['key set unavailable'])
  for (const tok of tokens) t.equal(await verdict(tok, policy), 'key set unavailable')
  t.equal(jwks.fetches, 1, 'one fetch attempt for 40 verifications')
  jwks.mode = 'ok'
  await sleep(COOLDOWN_MS + 100)
  t.equal(await verdict(tokens[0]!, policy), 'accepted', 'read once the IdP answers, a cooldown later')
  t.equal(jwks.fetches, 2)
})
