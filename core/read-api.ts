import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type pg from 'pg'
import { DocId, docAllowed } from '../contracts/mod.ts'
import { isKeySetUnavailable, isTokenError, verifyToken, type TokenPolicy } from '../runtime/jwt.ts'
import type { Logger } from '../runtime/log.ts'
import type { CoreMetrics } from './metrics.ts'
import type { TenantReadStatus } from '../runtime/tenant-directory.ts'
import { readDocState } from './store.ts'

const STATE_PATH = /^\/v1\/docs\/(.+)\/state$/

export interface ReadApiOptions {
  tokens: TokenPolicy
  healthy: () => boolean
  /** What DF_TENANTS says of a tenant: suspended or removed get 403, unavailable 503. */
  tenantStatus: (tenant: string) => TenantReadStatus
}

/** HTTP read API on core: materialized state per document and health (metrics are on the ops port). */
export function createReadApi(o: ReadApiOptions, pool: pg.Pool, log: Logger, metrics: CoreMetrics): Server {
  return createServer((req, res) => {
    route(req, res).catch((err: unknown) => {
      log.error({ err, url: req.url }, 'read API request failed')
      reply(res, 500, { error: 'internal error' })
    })
  })

  async function route(req: IncomingMessage, res: ServerResponse): Promise<unknown> {
    const path = (req.url ?? '/').split('?')[0]!
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(res, 405, { error: 'method not allowed' })
    if (path === '/healthz') return o.healthy() ? reply(res, 200, 'ok') : reply(res, 503, 'unavailable')
    const m = STATE_PATH.exec(path)
    if (!m) return reply(res, 404, { error: 'not found' })
    let docId: string
    try {
      docId = DocId.parse(decodeURIComponent(m[1]!))
    } catch {
      return count(reply(res, 400, { error: 'bad document id' }))
    }
    const auth = req.headers.authorization ?? ''
    if (!auth.startsWith('Bearer ')) return count(reply(res, 401, { error: 'missing bearer token' }))
    let tenant: string
    try {
      const claims = await verifyToken(auth.slice(7).trim(), o.tokens)
      if (!docAllowed(claims, docId)) return count(reply(res, 403, { error: 'token does not cover this document' }))
      const status = o.tenantStatus(claims.tenant)
      if (status === 'suspended' || status === 'removed') return count(reply(res, 403, { error: `tenant ${claims.tenant} is ${status}` }))
      if (status === 'unavailable') return count(reply(res, 503, { error: 'tenant directory unavailable; retry' }))
      tenant = claims.tenant
    } catch (err) {
      if (isKeySetUnavailable(err)) return count(reply(res, 503, { error: 'token keys unavailable; retry' }))
      if (!isTokenError(err)) throw err
      return count(reply(res, 401, { error: err.message }))
    }
    const state = await readDocState(pool, tenant, docId)
    if (!state) return count(reply(res, 404, { error: 'no such document' }))
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': state.byteLength, 'cache-control': 'no-store' })
    res.end(state)
    count(200)
  }

  function count(status: number): void {
    metrics.readRequests.inc({ status })
  }
}

function reply(res: ServerResponse, status: number, body: string | object): number {
  const text = typeof body === 'string' ? body : JSON.stringify(body)
  res.writeHead(status, { 'content-type': typeof body === 'string' ? 'text/plain' : 'application/json' })
  res.end(text)
  return status
}
