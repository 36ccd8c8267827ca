import { SignJWT, jwtVerify, errors as joseErrors } from 'jose'
import { Claims } from '../contracts/auth.ts'

export class TokenError extends Error {
  override name = 'TokenError'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
  }
}
export const isTokenError = (e: unknown): e is TokenError => e instanceof TokenError

const key = (secret: string) => new TextEncoder().encode(secret)

/** How client tokens are checked. */
export const DEFAULT_CLOCK_TOLERANCE_S = 30

export interface TokenPolicy {
  /** HS256 secret, at least 32 bytes. */
  secret: string
  /** When set, `iss` must equal it. */
  issuer?: string | undefined
  /** When set, `aud` must contain it. */
  audience?: string | undefined
  /** Clock skew accepted on `exp`/`nbf`/`iat`, in seconds. Default 30. */
  clockToleranceS?: number
}

/** The policy of a process config that spread JwtConfig. */
export function tokenPolicy(c: { jwtSecret: string; jwtIssuer?: string | undefined; jwtAudience?: string | undefined; jwtClockToleranceS: number }): TokenPolicy {
  return { secret: c.jwtSecret, issuer: c.jwtIssuer, audience: c.jwtAudience, clockToleranceS: c.jwtClockToleranceS }
}

/** Verifies an HS256 DocFlow token and its claims; throws TokenError saying what is wrong. */
export async function verifyToken(token: string, policy: TokenPolicy): Promise<Claims> {
  if (!token) throw new TokenError('missing token')
  let payload: unknown
  try {
    ;({ payload } = await jwtVerify(token, key(policy.secret), {
      algorithms: ['HS256'],
      clockTolerance: policy.clockToleranceS ?? DEFAULT_CLOCK_TOLERANCE_S,
      ...(policy.issuer ? { issuer: policy.issuer } : {}),
      ...(policy.audience ? { audience: policy.audience } : {}),
    }))
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired) throw new TokenError('token expired', { cause: err })
    if (err instanceof joseErrors.JWTClaimValidationFailed) throw new TokenError(`token ${err.claim} rejected: ${err.reason}`, { cause: err })
    throw new TokenError('invalid token', { cause: err })
  }
  const claims = Claims.safeParse(payload)
  if (!claims.success) throw new TokenError(`bad claims: ${claims.error.issues.map((i) => `${i.path.join('.')} ${i.message}`).join('; ')}`)
  return claims.data
}

/** Signs a token; `ttlSeconds` sets `exp`; `iss`/`aud` when given. */
export async function mintToken(claims: Omit<Claims, 'exp'>, secret: string, ttlSeconds: number, extra: { issuer?: string; audience?: string } = {}): Promise<string> {
  const jwt = new SignJWT({ ...claims })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
  if (extra.issuer) jwt.setIssuer(extra.issuer)
  if (extra.audience) jwt.setAudience(extra.audience)
  return jwt.sign(key(secret))
}
