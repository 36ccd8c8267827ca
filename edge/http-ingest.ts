import type uWS from 'uWebSockets.js'
import type { JetStreamClient } from '@nats-io/jetstream'
import { CloseCode, DocId, EVENT_TIME_HEADER, EVENT_TIME_SKEW_MS, Limit, HTTP_INGEST_PATH, JS_ACCOUNT_RESOURCES_EXCEEDED, Role, editIdempotencyMsgId, editIngestSubject, encodeEnvelope, parseEventTime, type Claims } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'
import { isJetStreamApiError } from '../runtime/nats.ts'
import type { EdgeMetrics } from './metrics.ts'
import type { EdgeLimiter } from './limits.ts'
import { ProtocolError, inspectUpdate } from './protocol.ts'
import type { UpdateShape } from './update-shape.ts'

/** Who a request is, or why not (a socket's close code, mapped to an HTTP status here). */
export type Admission = { ok: true; tenant: string; claims: Claims } | { ok: false; code: number; reason: string }

export interface IngestOptions {
  /** Verifies the token and admits its tenant for `docId` (the socket path's checks). */
  admit(token: string, docId: string): Promise<Admission>
  /** Largest body accepted: the socket path's frame limit. */
  maxBodyBytes: number
  ackTimeoutMs: number
  edgeId: string
  /**
   * Called once JetStream has the update: a new one reaches the document's live clients; a
   * duplicate (a retry whose first try was stored, its answer lost) may never have reached them,
   * and its stored bytes are not these (a retry may change the body), so the room refetches.
   */
  stored(tenant: string, docId: string, userId: string, update: Uint8Array, duplicate: boolean): void
  stopping(): boolean
  /** The socket path's limits: per IP, per tenant, and the body bytes read before the token is checked. */
  limiter: EdgeLimiter
  /** The address a request is counted by (the edge's proxy-header setting). */
  clientIp(res: uWS.HttpResponse, req: uWS.HttpRequest): string
  /** True when `bytes` more would take the document past its size limit (known while a room has it open). */
  wouldPassSizeLimit(tenant: string, docId: string, bytes: number): boolean
  /** True when this edge's loaded room of the document holds less than the update needs (a clock gap, or structs it refers to). */
  lacksDependencies(tenant: string, docId: string, shape: UpdateShape): boolean
  /** True when this edge's room of the document knows another user owns a client id the update writes under (edge/client-owners.ts). */
  foreignClient(tenant: string, docId: string, userId: string, update: Uint8Array): boolean
}

/** Longest Idempotency-Key accepted: a UUID fits many times over. */
const MAX_IDEMPOTENCY_KEY_CHARS = 200
const IDEMPOTENCY_KEY = /^[\x21-\x7e]+$/

const STATUS: Record<number, string> = { 202: '202 Accepted', 400: '400 Bad Request', 401: '401 Unauthorized', 403: '403 Forbidden', 404: '404 Not Found', 413: '413 Payload Too Large', 429: '429 Too Many Requests', 503: '503 Service Unavailable', 507: '507 Insufficient Storage' }
const STATUS_OF_CLOSE: Record<number, number> = { [CloseCode.BadRequest]: 400, [CloseCode.Unauthorized]: 401, [CloseCode.Forbidden]: 403, [CloseCode.ServiceRestart]: 503, [CloseCode.TryAgainLater]: 503 }

class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

/**
 * `POST /v1/docs/<docId>/updates` for clients without a socket (mobile background sync): a
 * Bearer token, one binary Yjs update as the body and an Idempotency-Key. 202 once JetStream
 * stored it. The key becomes the message id, so the same key twice within JetStream's dedup
 * window is stored once whichever edge takes it; after the window a resend still changes
 * nothing, since core logs an update the document already holds as a duplicate, not again.
 *
 * An optional X-Event-Time (ISO 8601 with a zone, or ms since epoch) is when the client made the
 * edit; it travels as the envelope's eventTs. A time ahead of the edge's clock is clamped to the
 * ingest time — never refused, since refusing would strand a skewed phone's offline edits — and
 * the answer says `eventTimeClamped` when it was more than EVENT_TIME_SKEW_MS ahead.
 */
export function serveIngest(app: uWS.TemplatedApp, js: JetStreamClient, o: IngestOptions, metrics: EdgeMetrics, log: Logger): void {
  app.post(`${HTTP_INGEST_PATH}/*`, (res, req) => {
    const path = req.getUrl()
    const authorization = req.getHeader('authorization')
    const key = req.getHeader('idempotency-key')
    const eventTime = req.getHeader(EVENT_TIME_HEADER)
    const declaredBytes = Number(req.getHeader('content-length') || '0')
    let done = false
    let tenant = ''
    const respond = (status: number, body: Record<string, unknown>, headers: Record<string, string> = {}) => {
      if (done) return
      done = true
      metrics.httpIngests.inc({ tenant, status })
      res.cork(() => {
        res.writeStatus(STATUS[status] ?? String(status)).writeHeader('content-type', 'application/json')
        for (const [name, value] of Object.entries(headers)) res.writeHeader(name, value)
        res.end(JSON.stringify(body))
      })
    }
    const refuse = (err: unknown) => {
      if (err instanceof Refusal) {
        if (err.status >= 500) log.warn({ tenant, path, status: err.status, reason: err.message }, 'HTTP update not stored')
        return respond(err.status, { error: err.message }, err.status === 503 || err.status === 429 ? { 'retry-after': '1' } : {})
      }
      log.error({ err, tenant, path }, 'HTTP update failed')
      respond(503, { error: 'internal error; retry' }, { 'retry-after': '1' })
    }
    res.onAborted(() => (done = true))
    let docId: string
    let eventTs: number | undefined
    try {
      docId = parseIngestPath(path)
      if (!authorization.startsWith('Bearer ')) throw new Refusal(401, 'missing Authorization: Bearer <token>')
      if (!key) throw new Refusal(400, 'missing Idempotency-Key header')
      if (key.length > MAX_IDEMPOTENCY_KEY_CHARS || !IDEMPOTENCY_KEY.test(key)) throw new Refusal(400, `Idempotency-Key must be 1-${MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters`)
      if (declaredBytes > o.maxBodyBytes) throw new Refusal(413, `body above ${o.maxBodyBytes} bytes`)
      if (eventTime) eventTs = parseEventTimeOrRefuse(eventTime)
      if (o.stopping()) throw new Refusal(503, 'edge restarting')
    } catch (err) {
      return refuse(err)
    }
    const ip = o.clientIp(res, req)
    const throttled = o.limiter.startAdmission(ip)
    if (throttled) return refuse(new Refusal(o.limiter.refused(throttled, { ip }).http, `over the ${throttled} limit; retry later`))
    // The token is checked while the body arrives; past a few KiB the body waits for it.
    const admitted = admitEditor(o, authorization.slice('Bearer '.length), docId, log)
      .finally(() => o.limiter.admitted(ip))
      .then((admission) => {
        tenant = admission.tenant
        return admission
      })
    let paused = false
    admitted.then(() => {
      if (paused && !done) res.resume()
    }, refuse)
    const store = async (update: Uint8Array) => {
      const admission = await admitted
      if (update.byteLength === 0) throw new Refusal(400, 'empty body: send one binary Yjs update')
      const over = o.limiter.takeTenantUpdate(tenant, update.byteLength) ?? (o.wouldPassSizeLimit(tenant, docId, update.byteLength) ? Limit.DocumentBytes : null)
      if (over) throw new Refusal(o.limiter.refused(over, { tenant, userId: admission.claims.sub, docId, ip }).http, `over the ${over} limit`)
      let shape
      try {
        shape = inspectUpdate(update)
      } catch (err) {
        if (err instanceof ProtocolError) throw new Refusal(400, err.message)
        throw err
      }
      // Held pending, it would integrate under a later client's update (core refuses it too).
      if (o.lacksDependencies(tenant, docId, shape)) throw new Refusal(409, 'the document lacks edits this update depends on: sync the document, then send what it lacks')
      // Core refuses it too (foreign-client); refused here, the room's clients never get it.
      if (o.foreignClient(tenant, docId, admission.claims.sub, update)) throw new Refusal(403, 'the update writes under a Yjs client id another user owns')
      const ingestTs = Date.now()
      const clamped = eventTs !== undefined && eventTs - ingestTs > EVENT_TIME_SKEW_MS
      const event = eventTs === undefined ? {} : { eventTs: Math.min(eventTs, ingestTs) }
      const envelope = encodeEnvelope({ v: 1, tenant, docId, userId: admission.claims.sub, update, ingestTs, ...event, edgeId: o.edgeId, source: 'http' })
      let ack
      try {
        ack = await js.publish(editIngestSubject(tenant, docId), envelope, { msgID: editIdempotencyMsgId(tenant, admission.claims.sub, docId, key), timeout: o.ackTimeoutMs })
      } catch (err) {
        throw publishRefusal(err)
      }
      o.stored(tenant, docId, admission.claims.sub, update, ack.duplicate)
      return { duplicate: ack.duplicate, seq: ack.seq, ...(clamped ? { eventTimeClamped: true } : {}) }
    }
    readBody(res, o.maxBodyBytes, (bytes) => {
      if (done || tenant || bytes <= o.limiter.limits.unauthenticatedBodyBytes || paused) return
      paused = true
      res.pause()
    }, (body) => {
      if (body === null) return refuse(new Refusal(413, `body above ${o.maxBodyBytes} bytes`))
      store(body).then(
        (r) => respond(202, { status: 'accepted', ...r }),
        refuse,
      )
    })
  })
}

/** The token's checks for an HTTP update: an editor whose token covers `docId`, or a Refusal. */
async function admitEditor(o: IngestOptions, token: string, docId: string, log: Logger): Promise<Extract<Admission, { ok: true }>> {
  const admission = await o.admit(token, docId).catch((err: unknown) => {
    log.warn({ err, docId }, 'could not authorize an HTTP update')
    throw new Refusal(503, 'admission unavailable, retry')
  })
  if (!admission.ok) throw new Refusal(STATUS_OF_CLOSE[admission.code] ?? 403, admission.reason)
  if (admission.claims.role !== Role.Editor) throw new Refusal(403, 'viewers cannot write')
  return admission
}

/** X-Event-Time as ms since epoch, or a 400 saying what is accepted. */
function parseEventTimeOrRefuse(value: string): number {
  try {
    return parseEventTime(value)
  } catch (err) {
    if (err instanceof RangeError) throw new Refusal(400, err.message)
    throw err
  }
}

/** The document of `/v1/docs/<docId>/updates` (docId URL-encoded, or with raw slashes). */
export function parseIngestPath(path: string): string {
  const prefix = `${HTTP_INGEST_PATH}/`
  const suffix = '/updates'
  if (!path.startsWith(prefix) || !path.endsWith(suffix) || path.length <= prefix.length + suffix.length) throw new Refusal(404, `POST ${HTTP_INGEST_PATH}/<docId>/updates`)
  try {
    return DocId.parse(decodeURIComponent(path.slice(prefix.length, -suffix.length)))
  } catch {
    throw new Refusal(400, 'bad document id in URL')
  }
}

/** Collects the body; null once it passed `limit` bytes (the rest is not kept). `progress` sees the bytes read so far. */
function readBody(res: uWS.HttpResponse, limit: number, progress: (bytes: number) => void, done: (body: Uint8Array | null) => void): void {
  const chunks: Buffer[] = []
  let bytes = 0
  let over = false
  res.onData((chunk, isLast) => {
    if (over) return
    bytes += chunk.byteLength
    if (bytes > limit) {
      over = true
      return done(null)
    }
    chunks.push(Buffer.from(chunk.slice(0))) // uWS reuses the chunk after this callback
    if (isLast) done(new Uint8Array(Buffer.concat(chunks)))
    else progress(bytes)
  })
}

function publishRefusal(err: unknown): Refusal {
  if (isJetStreamApiError(err, JS_ACCOUNT_RESOURCES_EXCEEDED)) return new Refusal(507, 'tenant storage quota exceeded; retry later with the same Idempotency-Key')
  return new Refusal(503, `not stored (${(err as Error).message}); retry with the same Idempotency-Key`)
}
