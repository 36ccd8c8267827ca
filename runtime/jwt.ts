import { SignJWT, createRemoteJWKSet, decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTVerifyGetKey, type JWTVerifyOptions } from 'jose'
import { Claims, REVOCATION_TTL_MS } from '../contracts/auth.ts'

/**
 * Client tokens. The algorithm in a token's protected header picks its key, and each key takes
 * only its own algorithms: HS256 is checked with the shared secret (dev tokens, `npm run token`),
 * RS256/ES256 with the identity provider's public keys from the JWKS URL. So `alg: none` and an
 * HS256 token "signed" with a public key are refused, whatever the key set holds.
 */

export class TokenError extends Error {
  override name = 'TokenError'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
  }
}
export const isTokenError = (e: unknown): e is TokenError => e instanceof TokenError

/** The JWKS URL could not be read (down, slow, not a key set): the token is not known bad; retry later. */
export class KeySetUnavailable extends Error {
  override name = 'KeySetUnavailable'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
  }
}
export const isKeySetUnavailable = (e: unknown): e is KeySetUnavailable => e instanceof KeySetUnavailable

const key = (secret: string) => new TextEncoder().encode(secret)

/** How client tokens are checked. */
export const DEFAULT_CLOCK_TOLERANCE_S = 30
/** Defaults of the JWKS fetch (jose's own). */
export const DEFAULT_JWKS_TIMEOUT_MS = 5_000
export const DEFAULT_JWKS_CACHE_MAX_AGE_MS = 600_000
export const DEFAULT_JWKS_COOLDOWN_MS = 30_000

/** Algorithms of the shared secret and of the JWKS keys; any other `alg` is refused. */
export const SECRET_ALGORITHMS = ['HS256'] as const
export const KEY_SET_ALGORITHMS = ['RS256', 'ES256'] as const

export interface TokenPolicy {
  /** HS256 secret, at least 32 bytes. */
  secret: string
  /** JWKS URL of the identity provider; RS256/ES256 tokens are refused when unset. Default unset. */
  jwksUrl?: string | undefined
  /** Longest wait for the JWKS URL to answer. Default 5_000. */
  jwksTimeoutMs?: number | undefined
  /** Keys are fetched again after this long, even when every `kid` is known. Default 600_000. */
  jwksCacheMaxAgeMs?: number | undefined
  /** The JWKS URL is asked at most this often, whatever the traffic (an unknown `kid`: rotation without restart; a failed fetch). Default 30_000. */
  jwksCooldownMs?: number | undefined
  /** When set, `iss` must equal it. */
  issuer?: string | undefined
  /** When set, `aud` must contain it. */
  audience?: string | undefined
  /** Clock skew accepted on `exp`/`nbf`/`iat`, in seconds. Default 30. */
  clockToleranceS?: number
}

/** The policy of a process config that spread JwtConfig. */
export function tokenPolicy(c: {
  jwtSecret: string
  jwtIssuer?: string | undefined
  jwtAudience?: string | undefined
  jwtClockToleranceS: number
  jwksUrl?: string | undefined
  jwksTimeoutMs?: number | undefined
  jwksCacheMaxAgeMs?: number | undefined
  jwksCooldownMs?: number | undefined
}): TokenPolicy {
  return {
    secret: c.jwtSecret,
    issuer: c.jwtIssuer,
    audience: c.jwtAudience,
    clockToleranceS: c.jwtClockToleranceS,
    jwksUrl: c.jwksUrl,
    jwksTimeoutMs: c.jwksTimeoutMs,
    jwksCacheMaxAgeMs: c.jwksCacheMaxAgeMs,
    jwksCooldownMs: c.jwksCooldownMs,
  }
}

/**
 * One key set per URL and settings in a process: its cache survives policy copies, so keys are
 * fetched once per max age, not once per token.
 */
const keySets = new Map<string, JWTVerifyGetKey>()

/** Errors of the key lookup that are the token's fault: no key for its `kid`/`alg`, or several (jose tries each). */
const tokenKeyErrors = [joseErrors.JWKSNoMatchingKey, joseErrors.JWKSMultipleMatchingKeys]

/**
 * The identity provider's keys. Invariant: a key set once read is never dropped (a failed refetch
 * keeps verifying with the last good one), and the JWKS URL is asked at most once per cooldown
 * whatever the traffic: a stale cache, an unknown `kid` and an outage all share that one attempt.
 * KeySetUnavailable only while no key set was ever read, or for an unknown `kid` while the last
 * read failed (a rotated key cannot be told from a forged one then).
 */
function keySet(policy: TokenPolicy & { jwksUrl: string }): JWTVerifyGetKey {
  const timeoutDuration = policy.jwksTimeoutMs ?? DEFAULT_JWKS_TIMEOUT_MS
  const cacheMaxAge = policy.jwksCacheMaxAgeMs ?? DEFAULT_JWKS_CACHE_MAX_AGE_MS
  const cooldown = policy.jwksCooldownMs ?? DEFAULT_JWKS_COOLDOWN_MS
  const id = JSON.stringify([policy.jwksUrl, timeoutDuration, cacheMaxAge, cooldown])
  let getKey = keySets.get(id)
  if (getKey) return getKey
  // jose reads the URL (timeout, 200, JSON, validation) and keeps the last good set; with no max
  // age or cooldown of its own it never refetches unasked: when to ask is decided here.
  const remote = createRemoteJWKSet(new URL(policy.jwksUrl), { timeoutDuration, cacheMaxAge: Infinity, cooldownDuration: Infinity })
  let fetchedAt: number | undefined
  let attemptedAt = -Infinity
  let attempt = Promise.resolve()
  let failure: unknown
  const refetch = (): Promise<void> => {
    if (Date.now() - attemptedAt >= cooldown) {
      attemptedAt = Date.now()
      attempt = remote.reload().then(
        () => {
          fetchedAt = Date.now()
          failure = undefined
        },
        (err: unknown) => {
          failure = err
        },
      )
    }
    return attempt
  }
  const unavailable = (cause: unknown) => new KeySetUnavailable(`token keys unavailable from ${policy.jwksUrl}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause })
  const lookUp: JWTVerifyGetKey = async (header, token) => {
    try {
      return await remote(header, token)
    } catch (err) {
      if (tokenKeyErrors.some((E) => err instanceof E)) throw err
      throw unavailable(err)
    }
  }
  getKey = async (header, token) => {
    if (fetchedAt === undefined || Date.now() - fetchedAt >= cacheMaxAge) await refetch()
    if (fetchedAt === undefined) throw unavailable(failure)
    try {
      return await lookUp(header, token)
    } catch (err) {
      if (!(err instanceof joseErrors.JWKSNoMatchingKey)) throw err
      // Perhaps a rotated key: read the set again, once per cooldown.
      await refetch()
      if (failure !== undefined) throw unavailable(failure)
      return lookUp(header, token)
    }
  }
  keySets.set(id, getKey)
  return getKey
}

/**
 * Verifies a DocFlow token and its claims; throws TokenError saying what is wrong, or
 * KeySetUnavailable when the JWKS URL cannot be read (not the token's fault: retry later).
 */
export async function verifyToken(token: string, policy: TokenPolicy): Promise<Claims> {
  if (!token) throw new TokenError('missing token')
  let alg: unknown
  try {
    ;({ alg } = decodeProtectedHeader(token))
  } catch (err) {
    throw new TokenError('invalid token', { cause: err })
  }
  const checks: JWTVerifyOptions = {
    clockTolerance: policy.clockToleranceS ?? DEFAULT_CLOCK_TOLERANCE_S,
    ...(policy.issuer ? { issuer: policy.issuer } : {}),
    ...(policy.audience ? { audience: policy.audience } : {}),
  }
  let payload: unknown
  try {
    if ((SECRET_ALGORITHMS as readonly unknown[]).includes(alg)) {
      ;({ payload } = await jwtVerify(token, key(policy.secret), { ...checks, algorithms: [...SECRET_ALGORITHMS] }))
    } else if ((KEY_SET_ALGORITHMS as readonly unknown[]).includes(alg)) {
      if (!policy.jwksUrl) throw new TokenError(`token algorithm ${String(alg)} needs a key set and none is configured (DOCFLOW_JWKS_URL)`)
      ;({ payload } = await jwtVerify(token, keySet({ ...policy, jwksUrl: policy.jwksUrl }), { ...checks, algorithms: [...KEY_SET_ALGORITHMS] }))
    } else {
      throw new TokenError(`token algorithm ${JSON.stringify(alg)} not accepted (${[...SECRET_ALGORITHMS, ...KEY_SET_ALGORITHMS].join(', ')})`)
    }
  } catch (err) {
    if (err instanceof TokenError || err instanceof KeySetUnavailable) throw err
    if (err instanceof joseErrors.JWTExpired) throw new TokenError('token expired', { cause: err })
    if (err instanceof joseErrors.JWTClaimValidationFailed) throw new TokenError(`token ${err.claim} rejected: ${err.reason}`, { cause: err })
    if (err instanceof joseErrors.JWKSNoMatchingKey) throw new TokenError('no key in the key set for this token (kid / alg)', { cause: err })
    throw new TokenError('invalid token', { cause: err })
  }
  const claims = Claims.safeParse(payload)
  if (!claims.success) throw new TokenError(`bad claims: ${claims.error.issues.map((i) => `${i.path.join('.')} ${i.message}`).join('; ')}`)
  // A revocation is kept REVOCATION_TTL_MS from when it is made, which is after the token's iat:
  // so a token living longer from its iat (or from now, when iat is absent or later) could
  // outlive a revocation of it and be accepted again.
  const { exp, iat } = claims.data
  if (exp * 1000 - Math.min(Date.now(), (iat ?? Infinity) * 1000) > REVOCATION_TTL_MS) {
    throw new TokenError(`token lives too long: exp more than ${REVOCATION_TTL_MS / 86_400_000} days after iat (revocations are kept that long)`)
  }
  return claims.data
}

/**
 * The tenant and user a token claims, NOT verified: only for refusing a connect early (a forged
 * claim can only get its own connect refused). Null when the token cannot be decoded.
 */
export function claimedUser(token: string): { tenant: string; sub: string | null } | null {
  try {
    const { tenant, sub } = decodeJwt(token)
    return typeof tenant === 'string' ? { tenant, sub: typeof sub === 'string' ? sub : null } : null
  } catch {
    return null
  }
}

/** Signs an HS256 token; `ttlSeconds` sets `exp`; `iss`/`aud` when given. */
export async function mintToken(claims: Omit<Claims, 'exp'>, secret: string, ttlSeconds: number, extra: { issuer?: string; audience?: string } = {}): Promise<string> {
  const jwt = new SignJWT({ ...claims })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
  if (extra.issuer) jwt.setIssuer(extra.issuer)
  if (extra.audience) jwt.setAudience(extra.audience)
  return jwt.sign(key(secret))
}
