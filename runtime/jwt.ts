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

/** Verifies an HS256 DocFlow token and its claims; throws TokenError saying what is wrong. */
export async function verifyToken(token: string, secret: string): Promise<Claims> {
  if (!token) throw new TokenError('missing token')
  let payload: unknown
  try {
    ;({ payload } = await jwtVerify(token, key(secret), { algorithms: ['HS256'] }))
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired) throw new TokenError('token expired', { cause: err })
    throw new TokenError('invalid token', { cause: err })
  }
  const claims = Claims.safeParse(payload)
  if (!claims.success) throw new TokenError(`bad claims: ${claims.error.issues.map((i) => `${i.path.join('.')} ${i.message}`).join('; ')}`)
  return claims.data
}

/** Signs a token; `ttlSeconds` sets `exp`. */
export async function mintToken(claims: Omit<Claims, 'exp'>, secret: string, ttlSeconds: number): Promise<string> {
  return new SignJWT({ ...claims })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
    .sign(key(secret))
}
