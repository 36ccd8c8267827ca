/**
 * The client sockets of an edge, from upgrade to close. Invariant: a socket's frames reach its
 * room only after its token passed, in the order they came (those sent meanwhile are held);
 * every refusal is a close code, the only thing a browser WebSocket can read of it.
 */
import type uWS from 'uWebSockets.js'
import { CloseCode, READ_ONLY_MESSAGE_TYPE, SAVED_QUERY_PARAM, revokes, Limit, type Claims, type Revocation } from '../contracts/mod.ts'
import { DEFAULT_CLOCK_TOLERANCE_S } from '../runtime/jwt.ts'
import type { Logger } from '../runtime/log.ts'
import type { EdgeAdmission, SocketAdmission } from './admission.ts'
import type { EdgeMetrics } from './metrics.ts'
import { ProtocolError, parseClientMessage } from './protocol.ts'
import type { Room } from './room.ts'
import type { RoomClient } from './room-options.ts'
import { ConnectionBudget, type EdgeLimiter } from './limits.ts'
import type { CommitWatch } from './commit-watch.ts'
import { SavedReceipts } from './saved-receipts.ts'
import { SocketClient } from './socket-client.ts'

/** A socket whose token passed: what it carries until it closes. */
interface Admitted {
  tenant: string
  docId: string
  claims: Claims
  saved: boolean
  client: SocketClient
  room: Room
  budget: ConnectionBudget
}

/**
 * What a socket carries from upgrade to close. Sockets upgrade at once and are authorized
 * after open: a uWS defect (uNetworking/uWebSockets#1929) drops about one in 300-10,000
 * sockets ~1 ms after an upgrade completed from a later tick with 1006.
 */
export interface SocketData {
  path: string
  token: string
  saved: boolean
  ip: string
  /** Set once the token passed. */
  admitted: Admitted | null
  /** Frames that came while the token was checked, handled in order once it passed; null after. */
  early: Uint8Array[] | null
  earlyBytes: number
  closed: boolean
}

type Socket = uWS.WebSocket<SocketData>

/** The refusal of a socket whose token check ends while the edge drains (1012: reconnect elsewhere). */
const RESTARTING: SocketAdmission = { ok: false, code: CloseCode.ServiceRestart, reason: 'edge restarting' }

/** What a frame held before its token is checked counts beside its payload (its copy's objects on the heap), against unauthenticatedBodyBytes. */
const EARLY_FRAME_COST_BYTES = 256

export interface EdgeSocketsOptions {
  admission: EdgeAdmission
  limiter: EdgeLimiter
  commits: CommitWatch
  metrics: EdgeMetrics
  log: Logger
  /** Frame and update limit (edge/options.ts messageLimit). */
  maxMessageBytes: number
  /** Send backlog past which a socket is closed (4508). */
  maxBufferedBytes: number
  /** Leeway past a token's exp before its socket is closed. Default DEFAULT_CLOCK_TOLERANCE_S. */
  clockToleranceS?: number | undefined
  /** True once the edge stops: a socket whose token is still being checked is refused with 1012. */
  stopping(): boolean
  /** The room of a document, opened when none is. */
  room(tenant: string, docId: string): Room
}

/** Admits client sockets into their document's room and feeds it their frames. */
export class EdgeSockets {
  /** Every open client socket, for revocations. */
  private readonly clients = new Set<SocketClient>()

  constructor(private readonly opts: EdgeSocketsOptions) {}

  upgrade(res: uWS.HttpResponse, req: uWS.HttpRequest, context: uWS.us_socket_context_t): void {
    const token = req.getQuery('token') ?? ''
    const ip = this.opts.admission.screen(res, req, token)
    if (ip === null) return
    const data: SocketData = { path: req.getUrl(), token, saved: req.getQuery(SAVED_QUERY_PARAM) === '1', ip, admitted: null, early: [], earlyBytes: 0, closed: false }
    res.upgrade(data, req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), context)
  }

  /** Closes every socket whose token `r` revokes (4401: a stock client stops; the app brings a new token). */
  closeRevoked(r: Revocation): void {
    let closed = 0
    for (const client of this.clients) {
      if (!revokes(r, client.claims)) continue
      client.close(CloseCode.Unauthorized, 'token revoked')
      closed++
    }
    if (closed === 0) return
    this.opts.metrics.revokedSockets.inc({ tenant: r.tenant }, closed)
    this.opts.log.info({ tenant: r.tenant, userId: r.userId, tokenId: r.tokenId, sockets: closed, reason: r.reason }, 'tokens revoked; their sockets closed with 4401')
  }

  /** Checks the socket's token; every refusal is a close code, the only one a browser WebSocket can read. */
  open(ws: Socket): void {
    const data = ws.getUserData()
    // Whatever fails on the way (NATS slow or away) refuses this socket with 1013, never the process.
    const admission: Promise<SocketAdmission> = this.opts.stopping() ? Promise.resolve(RESTARTING) : this.opts.admission.socket(data.path, data.token, data.saved)
    admission
      .finally(() => this.opts.limiter.admitted(data.ip))
      .catch((err: unknown): SocketAdmission => {
        // Stopping ends the tenant directory under the checks still running: no failure, a drain.
        if (this.opts.stopping()) return RESTARTING
        this.opts.metrics.admissionFailures.inc()
        this.opts.log.warn({ err, path: data.path }, 'could not authorize a socket; refusing it with 1013')
        return { ok: false, code: CloseCode.TryAgainLater, reason: 'admission unavailable, retry' }
      })
      .then((admission) => {
        // A check that ended after the drain began opens no room: the client goes to another edge.
        if (!data.closed) this.opened(ws, data, this.opts.stopping() ? RESTARTING : admission)
      })
      .catch((err: unknown) => this.opts.log.error({ err, path: data.path }, 'opening a socket failed'))
  }

  private opened(ws: Socket, data: SocketData, admission: SocketAdmission): void {
    const early = data.early ?? []
    data.early = null
    if (!admission.ok) {
      this.opts.metrics.closes.inc({ code: admission.code })
      ws.end(admission.code, admission.reason)
      return
    }
    const { tenant, docId, claims } = admission
    const overUser = this.opts.limiter.openSocket(tenant, claims.sub)
    if (overUser) {
      const { close } = this.opts.limiter.refused(overUser, { tenant, userId: claims.sub, docId })
      this.opts.metrics.closes.inc({ code: close! })
      ws.end(close!, 'too many open sockets for this user')
      return
    }
    this.opts.metrics.connections.inc()
    const client = new SocketClient(ws, admission, this.opts.maxBufferedBytes, this.opts.metrics, this.opts.log)
    if (admission.saved) {
      client.receipts = new SavedReceipts((frame) => client.send(frame), this.opts.commits, () => client.close(CloseCode.InvalidUpdate, 'an edit was refused by core'))
      if (!client.canEdit) client.send(READ_ONLY_FRAME)
    }
    client.expireAt((claims.exp + (this.opts.clockToleranceS ?? DEFAULT_CLOCK_TOLERANCE_S)) * 1000)
    const room = this.opts.room(tenant, docId)
    data.admitted = { ...admission, client, room, budget: new ConnectionBudget(this.opts.limiter.limits, this.opts.maxMessageBytes) }
    this.clients.add(client)
    room.join(client)
    for (const frame of early) {
      if (data.closed) return
      this.frame(data.admitted, frame)
    }
  }

  message(ws: Socket, message: ArrayBuffer): void {
    const data = ws.getUserData()
    // uWS reuses the buffer after this callback returns; frame() checks it before copying it.
    if (data.admitted) return this.frame(data.admitted, new Uint8Array(message))
    if (!data.early) return // refused; its close is on the way
    // Each held frame costs its copy's objects too: a flood of empty frames is bounded like one of bytes.
    data.earlyBytes += message.byteLength + EARLY_FRAME_COST_BYTES
    if (data.earlyBytes > this.opts.limiter.limits.unauthenticatedBodyBytes) {
      const { close } = this.opts.limiter.refused(Limit.UnauthenticatedBytes, { ip: data.ip })
      data.early = null
      ws.end(close!, 'too much sent before the token was checked')
      return
    }
    data.early.push(new Uint8Array(message.slice(0)))
  }

  /** `message` may be uWS's own buffer: checked in place, copied before anything keeps it. */
  private frame(data: Admitted, message: Uint8Array): void {
    const overBytes = data.budget.takeFrame(message.byteLength)
    if (overBytes) return this.closeOverLimit(data.client, data.tenant, data.docId, overBytes)
    if (message.byteLength > this.opts.maxMessageBytes) {
      // Only the writer goes; 4413 tells a stock client not to resend it.
      this.opts.metrics.tooBigRejections.inc({ tenant: data.tenant })
      this.opts.log.warn({ tenant: data.tenant, docId: data.docId, userId: data.claims.sub, bytes: message.byteLength, limit: this.opts.maxMessageBytes }, 'frame above the size limit; writer closed')
      data.client.close(CloseCode.MessageTooBig, `frame above ${this.opts.maxMessageBytes} bytes`)
      return
    }
    try {
      const msg = parseClientMessage(message.slice())
      if (msg.type === 'update') {
        const over = data.budget.takeUpdate() ?? (data.client.canEdit ? this.opts.limiter.takeTenantUpdate(data.tenant, msg.update.byteLength) : null)
        if (over) return this.closeOverLimit(data.client, data.tenant, data.docId, over)
      } else if (msg.type === 'sync-step1' || msg.type === 'query-awareness') {
        // A few bytes each that the room answers with an encode (a state diff, every presence state).
        const over = data.budget.takeRequest()
        if (over) return this.closeOverLimit(data.client, data.tenant, data.docId, over)
      }
      data.room.receive(data.client, msg, msg.type === 'update' ? data.client.receipts?.open() : undefined)
    } catch (err) {
      if (err instanceof ProtocolError) {
        this.opts.metrics.rejectedFrames.inc({ reason: 'frame' })
        data.client.close(CloseCode.BadRequest, err.message)
        return
      }
      // A throw out of a uWS callback would kill the process: this socket goes instead.
      this.opts.metrics.rejectedFrames.inc({ reason: 'internal' })
      this.opts.log.error({ err, tenant: data.tenant, docId: data.docId, userId: data.claims.sub }, 'handling a frame failed; socket closed')
      data.client.close(CloseCode.TryAgainLater, 'internal error, resyncing')
    }
  }

  /** A socket over a limit goes with the limit's code (its edits stay in the client, which resends them on resync). */
  closeOverLimit(client: RoomClient, tenant: string, docId: string, limit: Limit): void {
    const { close } = this.opts.limiter.refused(limit, { tenant, userId: client.userId, docId })
    client.close(close!, `over the ${limit} limit`)
  }

  closed(ws: Socket, code: number, message: ArrayBuffer): void {
    const data = ws.getUserData()
    data.closed = true
    const admitted = data.admitted
    if (code === 1006 && Buffer.from(message).toString() === UWS_TOO_BIG_REASON) {
      // uWS cut a message above maxPayloadLength unread; the client saw 1006 and reconnects.
      this.opts.metrics.framesCut.inc({ tenant: admitted?.tenant ?? '' })
      this.opts.log.warn({ tenant: admitted?.tenant, docId: admitted?.docId, userId: admitted?.claims.sub, ip: data.ip }, 'message above the read bound; uWS closed the socket (1006)')
    }
    if (!admitted) return
    this.opts.limiter.closedSocket(admitted.tenant, admitted.claims.sub)
    admitted.client.markClosed()
    this.clients.delete(admitted.client)
    this.opts.metrics.connections.dec()
    admitted.room.leave(admitted.client)
  }
}

/** The reason uWS gives its close handler when it cut a message above maxPayloadLength. */
const UWS_TOO_BIG_REASON = 'Received too big message'

/** Tells an opted-in viewer's socket that its edits are never saved (contracts/saved.ts). */
const READ_ONLY_FRAME = new Uint8Array([READ_ONLY_MESSAGE_TYPE])
