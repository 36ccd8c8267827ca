import t from 'tap'
import { z } from 'zod'
import { SignJWT } from 'jose'
import { REVOCATION_TTL_MS } from '../../contracts/mod.ts'
import { ConfigError, JWT_VARS, JwtConfig, loadConfig } from '../../runtime/config.ts'
import { isTokenError, mintToken, tokenPolicy, verifyToken } from '../../runtime/jwt.ts'

const SECRET = 'a-test-secret-of-at-least-32-bytes!!'
const claims = { sub: 'u1', tenant: 'acme', docs: ['*'], role: 'editor' as const }
const Config = z.object(JwtConfig)

/** The reason verifyToken refused a token, or 'accepted'. */
async function verdict(token: string, policy: Parameters<typeof verifyToken>[1]): Promise<string> {
  try {
    await verifyToken(token, policy)
    return 'accepted'
  } catch (err) {
    if (!isTokenError(err)) throw err
    return err.message
  }
}

t.test('runtime - a JWT secret shorter than 32 bytes is refused at start, naming the variable', async (t) => {
  t.throws(() => loadConfig(Config, JWT_VARS, { DOCFLOW_JWT_SECRET: 'x'.repeat(31) }), { name: ConfigError.name, message: /DOCFLOW_JWT_SECRET=.*at least 32 bytes/ })
  // 11 three-byte characters are 33 bytes: bytes count, not characters.
  t.equal(loadConfig(Config, JWT_VARS, { DOCFLOW_JWT_SECRET: '€'.repeat(11) }).jwtSecret, '€'.repeat(11))
  t.throws(() => loadConfig(Config, JWT_VARS, { DOCFLOW_JWT_SECRET: '€'.repeat(10) }), /at least 32 bytes/)
})

t.test('runtime - iss and aud are checked when configured', async (t) => {
  const policy = tokenPolicy(loadConfig(Config, JWT_VARS, { DOCFLOW_JWT_SECRET: SECRET, DOCFLOW_JWT_ISSUER: 'https://id.docflow.test', DOCFLOW_JWT_AUDIENCE: 'docflow-edge' }))
  const good = await mintToken(claims, SECRET, 600, { issuer: 'https://id.docflow.test', audience: 'docflow-edge' })
  t.equal(await verdict(good, policy), 'accepted')
  t.match(await verdict(await mintToken(claims, SECRET, 600, { issuer: 'https://evil.test', audience: 'docflow-edge' }), policy), /iss/, 'another issuer')
  t.match(await verdict(await mintToken(claims, SECRET, 600, { issuer: 'https://id.docflow.test', audience: 'someone-else' }), policy), /aud/, 'another audience')
  t.match(await verdict(await mintToken(claims, SECRET, 600), policy), /iss|aud/, 'neither claim')
  t.equal(await verdict(await mintToken(claims, SECRET, 600), { secret: SECRET }), 'accepted', 'not checked when not configured')
})

t.test('runtime - expiry allows the configured clock skew and no more', async (t) => {
  const policy = tokenPolicy(loadConfig(Config, JWT_VARS, { DOCFLOW_JWT_SECRET: SECRET, DOCFLOW_JWT_CLOCK_TOLERANCE_S: '30' }))
  t.equal(await verdict(await mintToken(claims, SECRET, -10), policy), 'accepted', 'expired 10 s ago, within the skew')
  t.equal(await verdict(await mintToken(claims, SECRET, -60), policy), 'token expired', 'expired 60 s ago')
  t.equal(await verdict(await mintToken(claims, SECRET, -10), { ...policy, clockToleranceS: 0 }), 'token expired', 'no skew allowed')
  const now = Math.floor(Date.now() / 1000)
  const future = await new SignJWT({ ...claims }).setProtectedHeader({ alg: 'HS256' }).setNotBefore(now + 120).setExpirationTime(now + 600).sign(new TextEncoder().encode(SECRET))
  t.match(await verdict(future, policy), /nbf/, 'not valid for another two minutes')
  t.throws(() => loadConfig(Config, JWT_VARS, { DOCFLOW_JWT_SECRET: SECRET, DOCFLOW_JWT_CLOCK_TOLERANCE_S: '3600' }), /DOCFLOW_JWT_CLOCK_TOLERANCE_S/, 'an hour of skew is refused')
})

t.test('runtime - a token living longer than revocations are kept is refused, counted from its iat', async (t) => {
  const ttlS = REVOCATION_TTL_MS / 1000
  const now = Math.floor(Date.now() / 1000)
  const signed = (times: { iat?: number; exp: number }) => new SignJWT({ ...claims, ...times }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(SECRET))
  t.equal(await verdict(await mintToken(claims, SECRET, ttlS), { secret: SECRET }), 'accepted', 'the longest npm run token mints (--ttl 7d)')
  t.equal(await verdict(await mintToken(claims, SECRET, 365 * 86_400), { secret: SECRET }), 'token lives too long: exp more than 7 days after iat (revocations are kept that long)', 'a year')
  t.match(await verdict(await mintToken(claims, SECRET, ttlS + 60), { secret: SECRET }), /lives too long/, 'a minute over')
  // Revoked on day 1, its revocation gone on day 8, still valid until day 9: refused though it expires tomorrow.
  t.match(await verdict(await signed({ iat: now - 8 * 86_400, exp: now + 86_400 }), { secret: SECRET }), /lives too long/, 'issued 8 days ago, expires tomorrow')
  t.equal(await verdict(await signed({ iat: now - 6 * 86_400, exp: now + 86_400 }), { secret: SECRET }), 'accepted', 'issued 6 days ago, expires tomorrow')
  t.match(await verdict(await signed({ exp: now + 8 * 86_400 }), { secret: SECRET }), /lives too long/, 'no iat: counted from now')
  t.equal(await verdict(await signed({ exp: now + 86_400 }), { secret: SECRET }), 'accepted', 'no iat, expires tomorrow')
  t.match(await verdict(await signed({ iat: now + 30 * 86_400, exp: now + 31 * 86_400 }), { secret: SECRET }), /lives too long/, 'an iat in the future does not extend it')
})
