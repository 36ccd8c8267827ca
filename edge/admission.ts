import type uWS from 'uWebSockets.js'
import { CloseCode, DocId, docAllowed, type Claims } from '../contracts/mod.ts'
import { claimedUser, isKeySetUnavailable, isTokenError, verifyToken, type TokenPolicy } from '../runtime/jwt.ts'
import type { Logger } from '../runtime/log.ts'
import type { Revocations } from '../runtime/revocations.ts'
import type { Admission } from './http-ingest.ts'
import type { EdgeLimiter } from './limits.ts'
import type { EdgeMetrics } from './metrics.ts'
import type { TenantAdmission } from './tenants.ts'

/** A socket's admission: the token's, and the document and saved signal it asked for. */
export type SocketAdmission = Admission & ({ ok: false } | { docId: string; saved: boolean })

export interface EdgeAdmissionOptions {
  tokens: TokenPolicy
  /** Proxy header whose last entry is the client's address (EdgeOptions.clientIpHeader). */
  clientIpHeader?: string | undefined
  limiter: EdgeLimiter
  metrics: EdgeMetrics
  log: Logger
  /** Opened by Edge.start, before the first connect. */
  revocations: () => Revocations
  tenants: () => TenantAdmission
}

/**
 * Who may open a document on this edge: connects are screened by the throttles before any token
 * work, then the token is checked for the document, the same way for sockets and HTTP ingest.
 */
export class EdgeAdmission {
  constructor(private readonly o: EdgeAdmissionOptions) {}

  /**
   * The connect's address, or null when it was refused with a status (sent here) before any token
   * work: a stock client takes it as a failed connect and backs off (a close after open would
   * reset its backoff). A tenant over its rate is judged by the token's unverified claim, which
   * only ever refuses; so is a user whose update did not apply a moment ago.
   */
  screen(res: uWS.HttpResponse, req: uWS.HttpRequest, token: string): string | null {
    const { limiter } = this.o
    const ip = this.clientIp(res, req)
    const claimed = claimedUser(token)
    const cooling = claimed && (limiter.tenantCooling(claimed.tenant) ?? (claimed.sub === null ? null : limiter.userCooling(claimed.tenant, claimed.sub)))
    const refusal = cooling ?? limiter.startAdmission(ip)
    if (!refusal) return ip
    refuseUpgrade(res, limiter.refused(refusal, cooling ? { tenant: claimed!.tenant, userId: claimed!.sub ?? undefined } : { ip }).http)
    return null
  }

  /** A socket's token for the document its URL path names. */
  async socket(path: string, token: string, saved: boolean): Promise<SocketAdmission> {
    let docId: string
    try {
      docId = DocId.parse(decodeURIComponent(path.slice(1)))
    } catch {
      return { ok: false, code: CloseCode.BadRequest, reason: 'bad document id in URL' }
    }
    const admission = await this.token(token, docId)
    return admission.ok ? { ...admission, docId, saved } : admission
  }

  /** The token's checks for one document, shared by sockets and HTTP ingest. */
  async token(token: string, docId: string): Promise<Admission> {
    let claims: Claims
    try {
      claims = await verifyToken(token, this.o.tokens)
    } catch (err) {
      // The JWKS URL, not the token, failed: thrown on, so sockets get 1013 and HTTP 503 (retry).
      if (isKeySetUnavailable(err)) throw err
      if (!isTokenError(err)) this.o.log.error({ err }, 'token verification crashed')
      return { ok: false, code: CloseCode.Unauthorized, reason: isTokenError(err) ? err.message : 'invalid token' }
    }
    if (this.o.revocations().revoked(claims)) return { ok: false, code: CloseCode.Unauthorized, reason: 'token revoked' }
    if (!docAllowed(claims, docId)) return { ok: false, code: CloseCode.Forbidden, reason: 'token does not cover this document' }
    const admission = await this.o.tenants().admit(claims.tenant)
    if (!admission.ok) {
      this.o.metrics.tenantRefusals.inc()
      return { ok: false, code: CloseCode.Forbidden, reason: admission.reason }
    }
    return { ok: true, tenant: claims.tenant, claims }
  }

  /**
   * The address connects are counted by: the configured proxy header's last entry (the address
   * our proxy saw; earlier entries are the client's to choose), else the peer's.
   */
  clientIp(res: uWS.HttpResponse, req: uWS.HttpRequest): string {
    const header = this.o.clientIpHeader ? (req.getHeader(this.o.clientIpHeader).split(',').at(-1) ?? '').trim() : ''
    return header || Buffer.from(res.getRemoteAddressAsText()).toString()
  }
}

/** Answers an upgrade with 429 or 503 instead: a stock client takes it as a failed connect and backs off. */
function refuseUpgrade(res: uWS.HttpResponse, status: number): void {
  res.writeStatus(status === 429 ? '429 Too Many Requests' : '503 Service Unavailable').writeHeader('retry-after', '1').end()
}
