import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { SignJWT, exportJWK, generateKeyPair, type JWK } from 'jose'
import type { Claims } from '../../contracts/mod.ts'
import { isKeySetUnavailable, isTokenError, verifyToken, type TokenPolicy } from '../../runtime/jwt.ts'

/** The claims signingKey's `sign` puts in a token unless given others. */
export const editorClaims = { sub: 'u1', tenant: 'acme', docs: ['*'], role: 'editor' as const }

/** A signing key of the identity provider and its public JWK as a JWKS serves it. */
export async function signingKey(alg: 'RS256' | 'ES256', kid: string) {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true })
  const jwk: JWK = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' }
  const sign = (c: Omit<Claims, 'exp'> = editorClaims, ttlS = 600, header: Record<string, unknown> = {}) =>
    new SignJWT({ ...c })
      .setProtectedHeader({ alg, kid, typ: 'JWT', ...header })
      .setIssuedAt()
      .setExpirationTime(Math.floor(Date.now() / 1000) + ttlS)
      .sign(privateKey)
  return { jwk, publicKey, sign }
}

/** An identity provider's JWKS endpoint on node:http: the keys it serves, how it fails, how often it was read. */
export class JwksServer {
  keys: JWK[] = []
  /** ok: 200 with the keys; error: 500; hang: never answers. */
  mode: 'ok' | 'error' | 'hang' = 'ok'
  /** How long each answer waits (a slow identity provider). */
  delayMs = 0
  fetches = 0
  url = ''
  private server: Server = createServer((req, res) => {
    this.fetches++
    if (this.mode === 'hang') return
    setTimeout(() => {
      if (this.mode === 'error') return void res.writeHead(500).end('identity provider down')
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: this.keys }))
    }, this.delayMs)
  })
  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/.well-known/jwks.json`
    return this
  }
  stop(): Promise<void> {
    this.server.closeAllConnections()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}

/** The reason verifyToken refused a token, 'accepted', or 'key set unavailable'. */
export async function verdict(token: string, policy: TokenPolicy): Promise<string> {
  try {
    await verifyToken(token, policy)
    return 'accepted'
  } catch (err) {
    if (isKeySetUnavailable(err)) return 'key set unavailable'
    if (!isTokenError(err)) throw err
    return err.message
  }
}
