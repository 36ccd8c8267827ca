import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type pg from 'pg'
import { BLAME_MAX_TYPE_CHARS, BlameParam, DEFAULT_TEXT_TYPE, DocId, HistoryParam, LAST_SEQ_HEADER, LAST_SEQ_TIME_HEADER, READ_BUSY_RETRY_AFTER_S, READ_BUSY_STATUS, READ_UNAVAILABLE_RETRY_AFTER_S, READ_UNAVAILABLE_STATUS, ROLLBACK_MAX_BODY_BYTES, Role, STATE_AT_PARAM, STATE_SEQ_HEADER, docAllowed, type BlameAnswer, type Claims } from '../contracts/mod.ts'
import { isKeySetUnavailable, isTokenError, verifyToken, type TokenPolicy } from '../runtime/jwt.ts'
import type { Logger } from '../runtime/log.ts'
import type { CoreMetrics } from './metrics.ts'
import type { TenantReadStatus } from '../runtime/tenant-directory.ts'
import { RevocationsUnavailableError } from '../runtime/revocations.ts'
import { parseHistoryQuery, readHistoryPage, readLastApplied, type LastApplied } from './history.ts'
import type { MergedStates } from './merged-states.ts'
import { isDocDeleted } from './deletion.ts'
import { nextTurn, parsePointInTime, readStateAt } from './point-in-time.ts'
import { isDatabaseUnavailable } from './errors.ts'
import type { BlobStore } from '../runtime/blobs/blob-store.ts'
import { readBlame } from './blame.ts'
import { rollback } from './rollback.ts'

/** `/v1/docs/<docId>/<view>`; the doc id may hold slashes, the view is the last segment. */
const DOC_PATH = /^\/v1\/docs\/(.+)\/([a-z]+)$/

/** Heavy reads (state?at=, history, blame, rollback) one core serves at once by default. */
export const DEFAULT_MAX_HEAVY_READS = 4
/** Blame spans JSON-encoded per write; the event loop runs between writes. */
const SPANS_PER_WRITE = 2_000
/** What a bad `at` gets told (PointSeqText, PointTime). */
const POINT_FORMAT = 'a stream sequence (1 to 15 digits) or an ISO 8601 date-time with seconds and a zone (Z or ±hh:mm) on a real date, e.g. 2026-11-26T12:00:00Z'

export interface ReadApiOptions {
  tokens: TokenPolicy
  healthy: () => boolean
  /** What DF_TENANTS says of a tenant: suspended or removed get 403, unavailable 503. */
  tenantStatus: (tenant: string) => TenantReadStatus
  /** True when DF_REVOCATIONS covers the token (401); throws RevocationsUnavailableError while the list is not followed (503). */
  revoked: (claims: Claims) => boolean
  /** Where snapshots are, for point-in-time state. */
  blobs: BlobStore
  /** Base URL of an edge's HTTP ingest that rollback updates go through (core/rollback.ts); null: rollback answers 503. */
  edgeUrl: string | null
  /** How long the edge may take to store a rollback update. Default 10_000. */
  edgeTimeoutMs?: number
  /** Heavy reads in flight at most (one tenant: half of them, rounded up); the others get READ_BUSY_STATUS (contracts/read-api.ts). Default DEFAULT_MAX_HEAVY_READS. */
  maxHeavyReads?: number
}

/** A request for one view of one document, its token checked and its tenant taken from the token. */
interface DocRequest {
  tenant: string
  docId: string
  query: URLSearchParams
  /** The verified token and its claims (rollback acts as the caller). */
  token: string
  claims: Claims
  /** The document's newest op-log row, read before the view (so the view holds at least it); null: no such document. */
  lastApplied: LastApplied | null
}

/** Answers one request about a document with its status; the staleness headers are already on `res`. */
type DocHandler = (r: DocRequest, res: ServerResponse, req: IncomingMessage) => Promise<number>

/**
 * HTTP read API on core: views of a document (GET: state, history, blame), actions on it (POST:
 * rollback) and health (metrics are on the ops
 * port). Every view answer about an existing document carries the staleness headers
 * (contracts/read-api.ts), set before the view is read.
 */
export function createReadApi(o: ReadApiOptions, pool: pg.Pool, log: Logger, metrics: CoreMetrics, mergedStates: MergedStates): Server {
  const maxHeavyReads = o.maxHeavyReads ?? DEFAULT_MAX_HEAVY_READS
  if (!Number.isInteger(maxHeavyReads) || maxHeavyReads < 1) throw new RangeError(`maxHeavyReads must be a positive integer, not ${maxHeavyReads}`)
  /**
   * Heavy reads in flight, in all and per tenant. Each replays or decodes op-log rows on the event
   * loop that commits every tenant's edits; each lets the loop run every few ms (point-in-time.ts
   * forEachSliced), and this bound keeps many at once from adding up to a stall. One tenant holds
   * at most half the slots (rounded up), so its burst leaves room for the other tenants' reads.
   */
  let heavyReads = 0
  const tenantShare = Math.ceil(maxHeavyReads / 2)
  const tenantHeavyReads = new Map<string, number>()
  /** Runs `read` in a heavy-read slot, or answers READ_BUSY_STATUS with Retry-After when none is free for `tenant`. */
  async function heavy(res: ServerResponse, tenant: string, read: () => Promise<number>): Promise<number> {
    const held = tenantHeavyReads.get(tenant) ?? 0
    const busy = heavyReads >= maxHeavyReads ? `core is serving ${maxHeavyReads} heavy reads` : held >= tenantShare ? `tenant ${tenant} has ${held} heavy reads in flight` : null
    if (busy) return reply(res, READ_BUSY_STATUS, { error: `${busy}; retry` }, { 'retry-after': String(READ_BUSY_RETRY_AFTER_S) })
    heavyReads++
    tenantHeavyReads.set(tenant, held + 1)
    try {
      return await read()
    } finally {
      heavyReads--
      const left = tenantHeavyReads.get(tenant)! - 1
      if (left === 0) tenantHeavyReads.delete(tenant)
      else tenantHeavyReads.set(tenant, left)
    }
  }

  const views = {
    async state(r, res) {
      const at = r.query.get(STATE_AT_PARAM)
      if (at !== null) return heavy(res, r.tenant, () => stateAt(r, res, at))
      const state = await mergedStates.read(r.tenant, r.docId)
      if (!state) return reply(res, 404, { error: 'no such document' })
      return sendState(res, state)
    },
    async history(r, res) {
      if (!r.lastApplied) return reply(res, 404, { error: 'no such document' })
      const q = parseHistoryQuery(r.query)
      if ('error' in q) return reply(res, 400, { error: q.error })
      return heavy(res, r.tenant, async () => reply(res, 200, await readHistoryPage(pool, r.tenant, r.docId, q), { 'cache-control': 'no-store' }))
    },
    /** `blame?type=<root Y.Text>&at=<point>`: who wrote each span of the text (core/blame.ts). */
    async blame(r, res) {
      const type = r.query.get(BlameParam.Type) ?? DEFAULT_TEXT_TYPE
      if (type.length < 1 || type.length > BLAME_MAX_TYPE_CHARS) return reply(res, 400, { error: `${BlameParam.Type} names a root Y.Text: 1 to ${BLAME_MAX_TYPE_CHARS} characters` })
      const at = r.query.get(BlameParam.At)
      const point = at === null ? null : parsePointInTime(at)
      if (at !== null && !point) return reply(res, 400, { error: `${BlameParam.At} takes ${POINT_FORMAT}` })
      if (!r.lastApplied) return reply(res, 404, { error: 'no such document' })
      const upto = point ?? { seq: r.lastApplied.seq }
      return heavy(res, r.tenant, async () => {
        const blame = await readBlame(pool, o.blobs, r.tenant, r.docId, upto, type)
        return blame ? sendBlame(res, blame) : reply(res, 404, { error: 'the document had no update by then' })
      })
    },
  } satisfies Record<string, DocHandler>

  const actions = {
    /** `POST …/rollback` (editors): restore or revert as a new update through the edge (core/rollback.ts). */
    async rollback(r, res, req) {
      if (r.claims.role !== Role.Editor) return reply(res, 403, { error: 'only editors can roll back' })
      const body = await readBody(req, ROLLBACK_MAX_BODY_BYTES)
      if (body === null) return reply(res, 413, { error: `body above ${ROLLBACK_MAX_BODY_BYTES} bytes` }, { connection: 'close' })
      if (!r.lastApplied) return reply(res, 404, { error: 'no such document' })
      const target = { tenant: r.tenant, docId: r.docId, user: r.claims.sub, token: r.token, basedOnSeq: r.lastApplied.seq }
      return heavy(res, r.tenant, async () => {
        const result = await rollback({ pool, blobs: o.blobs, edgeUrl: o.edgeUrl, edgeTimeoutMs: o.edgeTimeoutMs ?? 10_000, log }, target, body)
        return reply(res, result.status, result.body)
      })
    },
  } satisfies Record<string, DocHandler>

  /**
   * The query parameters each route takes (BRIEF); any other is refused with 400, not ignored: a
   * misspelt `at` would answer the current state as if it were the past one asked for.
   */
  const queryParams: Record<keyof typeof views | keyof typeof actions, readonly string[]> = {
    state: [STATE_AT_PARAM],
    history: Object.values(HistoryParam),
    blame: Object.values(BlameParam),
    rollback: [],
  }

  /** `state?at=`: the document as it was at a stream sequence or a time (snapshot + op log). */
  async function stateAt(r: DocRequest, res: ServerResponse, at: string): Promise<number> {
    const point = parsePointInTime(at)
    if (!point) return reply(res, 400, { error: `${STATE_AT_PARAM} takes ${POINT_FORMAT}` })
    if (!r.lastApplied) return reply(res, 404, { error: 'no such document' })
    const state = await readStateAt(pool, o.blobs, r.tenant, r.docId, point)
    if (!state) return reply(res, 404, { error: 'the document had no update by then' })
    return sendState(res, state.update, { [STATE_SEQ_HEADER]: String(state.seq) })
  }

  return createServer((req, res) => {
    route(req, res).catch((err: unknown) => {
      // PostgreSQL out of reach is an outage that ends on its own: 503 + Retry-After tells clients
      // and load balancers to come back, where a 500 says the request itself broke something.
      const unavailable = isDatabaseUnavailable(err)
      if (unavailable) log.warn({ error: err instanceof Error ? err.message : String(err), url: req.url }, 'read API request refused: PostgreSQL unavailable')
      else log.error({ err, url: req.url }, 'read API request failed')
      if (res.headersSent) res.destroy()
      else if (unavailable) count(reply(res, READ_UNAVAILABLE_STATUS, { error: 'database unavailable; retry' }, { 'retry-after': String(READ_UNAVAILABLE_RETRY_AFTER_S) }))
      else count(reply(res, 500, { error: 'internal error' }))
    })
  })

  async function route(req: IncomingMessage, res: ServerResponse): Promise<unknown> {
    const target = req.url ?? '/'
    const queryAt = target.indexOf('?')
    const path = queryAt < 0 ? target : target.slice(0, queryAt)
    const post = req.method === 'POST'
    if (!post && req.method !== 'GET' && req.method !== 'HEAD') return reply(res, 405, { error: 'method not allowed' })
    if (path === '/healthz') return o.healthy() ? reply(res, 200, 'ok') : reply(res, 503, 'unavailable')
    const m = DOC_PATH.exec(path)
    const handlers: Record<string, DocHandler> = post ? actions : views
    const view = m && Object.hasOwn(handlers, m[2]!) ? handlers[m[2]!]! : undefined
    if (m && !view && Object.hasOwn(post ? views : actions, m[2]!)) return reply(res, 405, { error: `${post ? 'GET' : 'POST'} only` }, { allow: post ? 'GET' : 'POST' })
    if (!m || !view) return reply(res, 404, { error: 'not found' })
    let docId: string
    try {
      docId = DocId.parse(decodeURIComponent(m[1]!))
    } catch {
      return count(reply(res, 400, { error: 'bad document id' }))
    }
    const auth = req.headers.authorization ?? ''
    if (!auth.startsWith('Bearer ')) return count(reply(res, 401, { error: 'missing bearer token' }))
    let tenant: string
    let claims: Claims
    try {
      claims = await verifyToken(auth.slice(7).trim(), o.tokens)
      if (o.revoked(claims)) return count(reply(res, 401, { error: 'token revoked' }))
      if (!docAllowed(claims, docId)) return count(reply(res, 403, { error: 'token does not cover this document' }))
      const status = o.tenantStatus(claims.tenant)
      if (status === 'suspended' || status === 'removed') return count(reply(res, 403, { error: `tenant ${claims.tenant} is ${status}` }))
      if (status === 'unavailable') return count(reply(res, 503, { error: 'tenant directory unavailable; retry' }))
      tenant = claims.tenant
    } catch (err) {
      if (isKeySetUnavailable(err)) return count(reply(res, 503, { error: 'token keys unavailable; retry' }))
      if (err instanceof RevocationsUnavailableError) return count(reply(res, 503, { error: 'revocation list unavailable; retry' }))
      if (!isTokenError(err)) throw err
      return count(reply(res, 401, { error: err.message }))
    }
    // A deleted document (core/deletion.ts) is hidden from every view until it is restored.
    if (await isDocDeleted(pool, tenant, docId)) return count(reply(res, 404, { error: 'no such document' }))
    const lastApplied = await readLastApplied(pool, tenant, docId)
    if (lastApplied) {
      res.setHeader(LAST_SEQ_HEADER, String(lastApplied.seq))
      res.setHeader(LAST_SEQ_TIME_HEADER, lastApplied.committedAt.toISOString())
    }
    const query = new URLSearchParams(queryAt < 0 ? '' : target.slice(queryAt + 1))
    const refused = queryProblem(m[2]!, query, queryParams[m[2]! as keyof typeof queryParams])
    if (refused) return count(reply(res, 400, { error: refused }))
    count(await view({ tenant, docId, query, token: auth.slice(7).trim(), claims, lastApplied }, res, req))
  }

  function count(status: number): void {
    metrics.readRequests.inc({ status })
  }
}

/** Why a route refuses its query (a parameter it does not take, or one given twice, of which only the first would count), or null. */
function queryProblem(route: string, query: URLSearchParams, takes: readonly string[]): string | null {
  const unknown = [...new Set([...query.keys()].filter((k) => !takes.includes(k)))]
  if (unknown.length > 0) return `unknown parameter${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}; ${route} takes ${takes.length > 0 ? takes.join(' and ') : 'no query parameters'}`
  const repeated = takes.find((k) => query.getAll(k).length > 1)
  return repeated === undefined ? null : `${repeated} given ${query.getAll(repeated).length} times; ${route} takes it once`
}


/** The request body, or null once it passed `limit` bytes (the rest is not read). */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | null> {
  if (Number(req.headers['content-length'] ?? 0) > limit) return Promise.resolve(null)
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let bytes = 0
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.byteLength
      if (bytes > limit) {
        req.removeAllListeners('data')
        req.pause()
        resolve(null)
      } else chunks.push(chunk)
    })
    req.on('end', () => resolve(Buffer.concat(chunks)))
    req.on('error', reject)
  })
}

function sendState(res: ServerResponse, state: Uint8Array, headers: Record<string, string> = {}): number {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': state.byteLength, 'cache-control': 'no-store', ...headers })
  res.end(state)
  return 200
}

/** Blame as JSON (the same bytes as JSON.stringify), its spans written SPANS_PER_WRITE at a time, a write per turn of the event loop (nextTurn): a long text is MBs of spans. */
async function sendBlame(res: ServerResponse, blame: BlameAnswer): Promise<number> {
  res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' })
  res.write(`{"type":${JSON.stringify(blame.type)},"seq":${blame.seq},"spans":[`)
  for (let i = 0; i < blame.spans.length && !res.destroyed; i += SPANS_PER_WRITE) {
    if (i > 0) {
      await nextTurn()
      res.write(',')
    }
    res.write(JSON.stringify(blame.spans.slice(i, i + SPANS_PER_WRITE)).slice(1, -1))
  }
  res.end(']}')
  return 200
}

function reply(res: ServerResponse, status: number, body: string | object, headers: Record<string, string> = {}): number {
  const text = typeof body === 'string' ? body : JSON.stringify(body)
  res.writeHead(status, { 'content-type': typeof body === 'string' ? 'text/plain' : 'application/json', ...headers })
  res.end(text)
  return status
}
