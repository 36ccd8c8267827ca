import { setTimeout as sleep } from 'node:timers/promises'
import uWS from 'uWebSockets.js'
import type { NatsConnection } from '@nats-io/transport-node'
import { jetstream } from '@nats-io/jetstream'
import { CloseCode, READ_ONLY_MESSAGE_TYPE, SAVED_QUERY_PARAM, revokes, Limit, type Claims, type Revocation } from '../contracts/mod.ts'
import { DEFAULT_CLOCK_TOLERANCE_S } from '../runtime/jwt.ts'
import type { Logger } from '../runtime/log.ts'
import { serveOps, type OpsServer } from '../runtime/ops-server.ts'
import { EdgeOptionsError } from './errors.ts'
import { serveHealth } from './http.ts'
import { serveIngest } from './http-ingest.ts'
import { EdgeAdmission, type SocketAdmission } from './admission.ts'
import { sendFanRefetch, sendFanUpdate } from './fan-link.ts'
import { createEdgeMetrics, type EdgeMetrics } from './metrics.ts'
import { ProtocolError, parseClientMessage } from './protocol.ts'
import { UpdatePublisher } from './publisher.ts'
import { Room } from './room.ts'
import type { RoomClient } from './room-options.ts'
import { TenantAdmission } from './tenants.ts'
import { Revocations } from '../runtime/revocations.ts'
import { PeerEdges } from './peer-edges.ts'
import { ConnectionBudget, EdgeLimiter, connectionBurstBytes } from './limits.ts'
import { DEFAULT_MAX_BUFFERED_BYTES, messageLimit, type EdgeOptions } from './options.ts'
import { CommitWatch } from './commit-watch.ts'
import { SavedReceipts } from './saved-receipts.ts'
import { SocketClient } from './socket-client.ts'
import { watchDocNotices } from './doc-notices.ts'

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
interface SocketData {
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

/** Serves the y-websocket protocol to clients and publishes their updates to JetStream. */
export class Edge {
  readonly metrics: EdgeMetrics
  private readonly rooms = new Map<string, Room>()
  private readonly publisher: UpdatePublisher
  private readonly inFlight = new Set<Promise<unknown>>()
  private tenants: TenantAdmission | null = null
  private revocations: Revocations | null = null
  private docNotices: { unsubscribe(): void } | null = null
  private readonly peers: PeerEdges
  /** Every open client socket, for revocations. */
  private readonly sockets = new Set<SocketClient>()
  private listenSocket: uWS.us_listen_socket | null = null
  private ops: OpsServer | null = null
  private stopping = false
  /** Publishes still unacked when stop() closed the publisher. */
  private unackedAtClose = 0
  /** Frame and update limit, checked against the server's max_payload at construction. */
  private readonly maxMessageBytes: number
  private readonly maxBufferedBytes: number
  private readonly limiter: EdgeLimiter
  private readonly admission: EdgeAdmission
  private readonly commits: CommitWatch

  constructor(
    private readonly opts: EdgeOptions,
    private readonly nc: NatsConnection,
    private readonly log: Logger,
    metrics?: EdgeMetrics,
  ) {
    this.metrics = metrics ?? createEdgeMetrics()
    this.maxMessageBytes = messageLimit(opts.maxMessageBytes, nc.info?.max_payload)
    this.maxBufferedBytes = opts.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES
    if (!(this.maxBufferedBytes > 0)) throw new EdgeOptionsError(`maxBufferedBytes must be positive, got ${this.maxBufferedBytes}`)
    this.peers = new PeerEdges(nc, opts.edgeId, log, (edgeId) => {
      for (const room of this.rooms.values()) room.peerGone(edgeId)
    })
    this.commits = new CommitWatch(nc, opts.edgeId, this.metrics, log)
    this.limiter = new EdgeLimiter(opts.limits, () => this.peers.liveCount, this.maxMessageBytes, this.metrics, log)
    this.admission = new EdgeAdmission({ tokens: opts.tokens, clientIpHeader: opts.clientIpHeader, limiter: this.limiter, metrics: this.metrics, log, revocations: () => this.revocations!, tenants: () => this.tenants! })
    this.publisher = new UpdatePublisher(nc, opts.edgeId, this.metrics, log, {
      ...(opts.editPartitions !== undefined ? { partitions: opts.editPartitions } : {}),
      ackTimeoutMs: opts.publishAckTimeoutMs,
      attempts: opts.publishAttempts,
      ...(opts.publishLingerMs !== undefined ? { lingerMs: opts.publishLingerMs } : {}),
      ...(opts.publishBatchTarget !== undefined ? { batchTarget: opts.publishBatchTarget } : {}),
      ...(opts.publishBusyUpdatesPerS !== undefined ? { busyUpdatesPerS: opts.publishBusyUpdatesPerS } : {}),
      ...(opts.publishMaxBatchUpdates !== undefined ? { maxBatchUpdates: opts.publishMaxBatchUpdates } : {}),
      ...(opts.publishMaxBatchBytes !== undefined ? { maxBatchBytes: opts.publishMaxBatchBytes } : {}),
    })
  }

  /** The bound ops port (after start). */
  get opsPort(): number {
    if (!this.ops) throw new Error('edge not started')
    return this.ops.port
  }

  /** Starts listening; resolves with the bound public port. */
  async start(): Promise<number> {
    this.tenants = await TenantAdmission.open(
      this.nc,
      { autoProvision: this.opts.autoProvisionTenants, provisionTimeoutMs: 15_000, watchRetryMs: 1_000 },
      this.log,
      (tenant, reason) => this.revoke(tenant, reason),
    )
    this.revocations = await Revocations.open(this.nc, 1_000, this.log, (r) => this.closeRevoked(r))
    this.peers.start()
    this.commits.start()
    this.docNotices = watchDocNotices(this.nc, this.log, (tenant, docId) => this.rooms.get(roomKey(tenant, docId))?.fail(CloseCode.DocumentDeleted, 'document deleted'))
    const healthy = () => !this.stopping && !this.nc.isClosed() && this.listenSocket !== null
    this.ops = await serveOps({ port: this.opts.opsPort, host: this.opts.opsHost ?? '127.0.0.1', registry: this.metrics.registry, healthy })
    const app = uWS.App()
    serveHealth(app, healthy)
    serveIngest(app, jetstream(this.nc), {
      admit: (token, docId) => this.admission.token(token, docId),
      maxBodyBytes: this.maxMessageBytes,
      ackTimeoutMs: this.opts.publishAckTimeoutMs,
      edgeId: this.opts.edgeId,
      stored: (tenant, docId, update, duplicate) => this.storedOverHttp(tenant, docId, update, duplicate),
      stopping: () => this.stopping,
      limiter: this.limiter,
      clientIp: (res, req) => this.admission.clientIp(res, req),
      wouldPassSizeLimit: (tenant, docId, bytes) => this.rooms.get(roomKey(tenant, docId))?.wouldPassSizeLimit(bytes) ?? false,
      lacksDependencies: (tenant, docId, shape) => this.rooms.get(roomKey(tenant, docId))?.lacksDependencies(shape) ?? false,
    }, this.metrics, this.log)
    app.ws<SocketData>('/*', {
      // uWS holds a message's fragments until it completes: it reads at most what the socket's
      // byte budget can ever pass (never below the frame limit) and cuts a larger one unread
      // (1006). A frame between the two is read, so its writer gets 4413 and does not resend it.
      maxPayloadLength: connectionBurstBytes(this.limiter.limits, this.maxMessageBytes),
      // SocketClient enforces the send backlog itself (4508); uWS must never drop a frame silently.
      maxBackpressure: 0,
      idleTimeout: 60,
      sendPingsAutomatically: true,
      upgrade: (res, req, context) => this.upgrade(res, req, context),
      open: (ws) => this.open(ws),
      message: (ws, message) => this.message(ws, message),
      close: (ws, code, message) => this.closed(ws, code, message),
    })
    app.any('/*', (res) => {
      res.writeStatus('404 Not Found').end('not found; connect a y-websocket client to ws://host/<docId>?token=<jwt>')
    })
    return new Promise((resolve, reject) => {
      app.listen(this.opts.host, this.opts.port, (socket) => {
        if (!socket) return reject(new Error(`edge could not listen on ${this.opts.host}:${this.opts.port}`))
        this.listenSocket = socket
        resolve(uWS.us_socket_local_port(socket))
      })
    })
  }

  /**
   * Stops taking sockets, waits up to FLUSH_BEFORE_CLOSE_MS for in-flight publishes, tells clients
   * to reconnect elsewhere (1012) and abandons what is still unacked.
   *
   * Closing before every publish is acked loses nothing: the room's doc and the "saved" signal
   * follow only JetStream acks and core commits, so an early close can withhold a saved signal
   * but never send a false one; the client's doc keeps every edit, and the sync step 2 it sends
   * on reconnecting carries what the new edge lacks. Flushing first still pays when NATS
   * answers (in milliseconds): the edits are stored before their clients reconnect, and fewer
   * come back as resends.
   */
  async stop(): Promise<void> {
    this.stopping = true
    this.tenants?.stop()
    this.revocations?.stop()
    this.peers.stop()
    this.limiter.stop()
    this.commits.stop()
    this.docNotices?.unsubscribe()
    if (this.listenSocket) uWS.us_listen_socket_close(this.listenSocket)
    this.listenSocket = null
    const flushed = Promise.allSettled([...this.inFlight]).then(() => true)
    if (!(await Promise.race([flushed, sleep(FLUSH_BEFORE_CLOSE_MS, false, { ref: false })]))) {
      this.log.warn({ publishes: this.inFlight.size, waitedMs: FLUSH_BEFORE_CLOSE_MS }, 'publishes not acked in time (NATS not answering); sockets closed with 1012 anyway, their clients resend the edits')
    }
    for (const room of [...this.rooms.values()]) room.fail(CloseCode.ServiceRestart, 'edge restarting')
    // Not retried past here: a retry could only duplicate what the clients resend to their next edge.
    this.unackedAtClose = this.inFlight.size
    this.publisher.close()
    await this.ops?.close()
    this.ops = null
  }

  /** What stop() abandoned, for the log line of a stop that missed its deadline (runtime/shutdown.ts). */
  unfinished(): Record<string, number> {
    return { unackedPublishes: this.unackedAtClose }
  }

  private upgrade(res: uWS.HttpResponse, req: uWS.HttpRequest, context: uWS.us_socket_context_t): void {
    const token = req.getQuery('token') ?? ''
    const ip = this.admission.screen(res, req, token)
    if (ip === null) return
    const data: SocketData = { path: req.getUrl(), token, saved: req.getQuery(SAVED_QUERY_PARAM) === '1', ip, admitted: null, early: [], earlyBytes: 0, closed: false }
    res.upgrade(data, req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), context)
  }

  /** Closes every socket whose token `r` revokes (4401: a stock client stops; the app brings a new token). */
  private closeRevoked(r: Revocation): void {
    let closed = 0
    for (const client of this.sockets) {
      if (!revokes(r, client.claims)) continue
      client.close(CloseCode.Unauthorized, 'token revoked')
      closed++
    }
    if (closed === 0) return
    this.metrics.revokedSockets.inc({ tenant: r.tenant }, closed)
    this.log.info({ tenant: r.tenant, userId: r.userId, tokenId: r.tokenId, sockets: closed, reason: r.reason }, 'tokens revoked; their sockets closed with 4401')
  }

  /**
   * A POSTed update JetStream stored: to the document's clients here, and on other edges. On a
   * duplicate, whose first try may never have been fanned out, every room of the document
   * refetches from core instead (this edge's own fan-out never comes back to it: noEcho).
   */
  private storedOverHttp(tenant: string, docId: string, update: Uint8Array, duplicate: boolean): void {
    const room = this.rooms.get(roomKey(tenant, docId))
    if (duplicate) {
      room?.refetch('http-duplicate')
      sendFanRefetch(this.nc, tenant, docId, `${this.opts.edgeId}/http`, this.log, this.metrics)
    } else if (room) room.acceptDurable(update)
    else sendFanUpdate(this.nc, tenant, docId, `${this.opts.edgeId}/http`, update, this.log, this.metrics)
  }

  /** Checks the socket's token; every refusal is a close code, the only one a browser WebSocket can read. */
  private open(ws: Socket): void {
    const data = ws.getUserData()
    // Whatever fails on the way (NATS slow or away) refuses this socket with 1013, never the process.
    const admission: Promise<SocketAdmission> = this.stopping ? Promise.resolve({ ok: false, code: CloseCode.ServiceRestart, reason: 'edge restarting' }) : this.admission.socket(data.path, data.token, data.saved)
    admission
      .finally(() => this.limiter.admitted(data.ip))
      .catch((err: unknown): SocketAdmission => {
        this.metrics.admissionFailures.inc()
        this.log.warn({ err, path: data.path }, 'could not authorize a socket; refusing it with 1013')
        return { ok: false, code: CloseCode.TryAgainLater, reason: 'admission unavailable, retry' }
      })
      .then((admission) => {
        if (!data.closed) this.opened(ws, data, admission)
      })
      .catch((err: unknown) => this.log.error({ err, path: data.path }, 'opening a socket failed'))
  }

  private opened(ws: Socket, data: SocketData, admission: SocketAdmission): void {
    const early = data.early ?? []
    data.early = null
    if (!admission.ok) {
      this.metrics.closes.inc({ code: admission.code })
      ws.end(admission.code, admission.reason)
      return
    }
    const { tenant, docId, claims } = admission
    const overUser = this.limiter.openSocket(tenant, claims.sub)
    if (overUser) {
      const { close } = this.limiter.refused(overUser, { tenant, userId: claims.sub, docId })
      this.metrics.closes.inc({ code: close! })
      ws.end(close!, 'too many open sockets for this user')
      return
    }
    this.metrics.connections.inc()
    const client = new SocketClient(ws, admission, this.maxBufferedBytes, this.metrics, this.log)
    if (admission.saved) {
      client.receipts = new SavedReceipts((frame) => client.send(frame), this.commits, () => client.close(CloseCode.InvalidUpdate, 'an edit was refused by core'))
      if (!client.canEdit) client.send(READ_ONLY_FRAME)
    }
    client.expireAt((claims.exp + (this.opts.tokens.clockToleranceS ?? DEFAULT_CLOCK_TOLERANCE_S)) * 1000)
    const room = this.room(tenant, docId)
    data.admitted = { ...admission, client, room, budget: new ConnectionBudget(this.limiter.limits, this.maxMessageBytes) }
    this.sockets.add(client)
    room.join(client)
    for (const frame of early) {
      if (data.closed) return
      this.frame(data.admitted, frame)
    }
  }

  private message(ws: Socket, message: ArrayBuffer): void {
    const data = ws.getUserData()
    // uWS reuses the buffer after this callback returns; frame() checks it before copying it.
    if (data.admitted) return this.frame(data.admitted, new Uint8Array(message))
    if (!data.early) return // refused; its close is on the way
    data.earlyBytes += message.byteLength
    if (data.earlyBytes > this.limiter.limits.unauthenticatedBodyBytes) {
      const { close } = this.limiter.refused(Limit.UnauthenticatedBytes, { ip: data.ip })
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
    if (message.byteLength > this.maxMessageBytes) {
      // Only the writer goes; 4413 tells a stock client not to resend it.
      this.metrics.tooBigRejections.inc({ tenant: data.tenant })
      this.log.warn({ tenant: data.tenant, docId: data.docId, userId: data.claims.sub, bytes: message.byteLength, limit: this.maxMessageBytes }, 'frame above the size limit; writer closed')
      data.client.close(CloseCode.MessageTooBig, `frame above ${this.maxMessageBytes} bytes`)
      return
    }
    try {
      const msg = parseClientMessage(message.slice())
      if (msg.type === 'update') {
        const over = data.budget.takeUpdate() ?? (data.client.canEdit ? this.limiter.takeTenantUpdate(data.tenant, msg.update.byteLength) : null)
        if (over) return this.closeOverLimit(data.client, data.tenant, data.docId, over)
      } else if (msg.type === 'sync-step1' || msg.type === 'query-awareness') {
        // A few bytes each that the room answers with an encode (a state diff, every presence state).
        const over = data.budget.takeRequest()
        if (over) return this.closeOverLimit(data.client, data.tenant, data.docId, over)
      }
      data.room.receive(data.client, msg, msg.type === 'update' ? data.client.receipts?.open() : undefined)
    } catch (err) {
      if (err instanceof ProtocolError) {
        this.metrics.rejectedFrames.inc({ reason: 'frame' })
        data.client.close(CloseCode.BadRequest, err.message)
        return
      }
      // A throw out of a uWS callback would kill the process: this socket goes instead.
      this.metrics.rejectedFrames.inc({ reason: 'internal' })
      this.log.error({ err, tenant: data.tenant, docId: data.docId, userId: data.claims.sub }, 'handling a frame failed; socket closed')
      data.client.close(CloseCode.TryAgainLater, 'internal error, resyncing')
    }
  }

  /** A socket over a limit goes with the limit's code (its edits stay in the client, which resends them on resync). */
  private closeOverLimit(client: RoomClient, tenant: string, docId: string, limit: Limit): void {
    const { close } = this.limiter.refused(limit, { tenant, userId: client.userId, docId })
    client.close(close!, `over the ${limit} limit`)
  }

  private closed(ws: Socket, code: number, message: ArrayBuffer): void {
    const data = ws.getUserData()
    data.closed = true
    const admitted = data.admitted
    if (code === 1006 && Buffer.from(message).toString() === UWS_TOO_BIG_REASON) {
      // uWS cut a message above maxPayloadLength unread; the client saw 1006 and reconnects.
      this.metrics.framesCut.inc({ tenant: admitted?.tenant ?? '' })
      this.log.warn({ tenant: admitted?.tenant, docId: admitted?.docId, userId: admitted?.claims.sub, ip: data.ip }, 'message above the read bound; uWS closed the socket (1006)')
    }
    if (!admitted) return
    this.limiter.closedSocket(admitted.tenant, admitted.claims.sub)
    admitted.client.markClosed()
    this.sockets.delete(admitted.client)
    this.metrics.connections.dec()
    admitted.room.leave(admitted.client)
  }

  /** A tenant was suspended or removed: its sockets go now, not at their next reconnect. */
  private revoke(tenant: string, reason: string): void {
    for (const room of [...this.rooms.values()]) {
      if (room.tenant !== tenant) continue
      this.metrics.tenantRefusals.inc(room.size)
      room.fail(CloseCode.Forbidden, reason)
    }
    this.log.warn({ tenant, reason }, 'tenant revoked; its sockets were closed')
  }

  private room(tenant: string, docId: string): Room {
    const key = roomKey(tenant, docId)
    let room = this.rooms.get(key)
    if (!room) {
      room = new Room({
        tenant,
        docId,
        edgeId: this.opts.edgeId,
        nc: this.nc,
        log: this.log,
        metrics: this.metrics,
        stateTimeoutMs: this.opts.stateTimeoutMs,
        resyncDelayMs: this.opts.resyncDelayMs,
        ...this.opts.awareness,
        maxDocumentBytes: this.limiter.limits.maxDocumentBytes,
        overLimit: (client, limit) => this.closeOverLimit(client, tenant, docId, limit),
        poisoned: (client) => this.limiter.poisoned(tenant, client.userId),
        publish: (update, userId, savedNotice) => this.track(this.publisher.publish(tenant, docId, userId, update, savedNotice)),
        onClosed: (closed) => {
          if (this.rooms.get(key) === closed) this.rooms.delete(key)
          this.metrics.rooms.set(this.rooms.size)
        },
      })
      this.rooms.set(key, room)
      this.metrics.rooms.set(this.rooms.size)
    }
    return room
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inFlight.add(p)
    const done = () => this.inFlight.delete(p)
    p.then(done, done)
    return p
  }
}

/**
 * How long stop() waits for in-flight publishes before closing sockets with 1012 (the
 * publisher's default ack timeout). A JetStream that answers acks within milliseconds; past
 * this it is not answering, and each second more keeps clients from a working edge.
 */
const FLUSH_BEFORE_CLOSE_MS = 2_000

/**
 * Longest an edge process takes from SIGTERM to exit (drainOnSignal): stop() (at most
 * FLUSH_BEFORE_CLOSE_MS, then 1012) plus the NATS drain, which a frozen nats-server never
 * answers. Helm's 60 s grace period less its 15 s preStop sleep leaves 45 s after SIGTERM
 * (helm/docflow/values.yaml), `npm start` 20 s; 15 s stays under both and still lets a
 * nats-server restart finish and the drain flush the publishes written meanwhile.
 */
export const EDGE_STOP_DEADLINE_MS = 15_000

/** The reason uWS gives its close handler when it cut a message above maxPayloadLength. */
const UWS_TOO_BIG_REASON = 'Received too big message'

/** Key of a room in Edge.rooms. */
const roomKey = (tenant: string, docId: string) => `${tenant}\0${docId}`

/** Tells an opted-in viewer's socket that its edits are never saved (contracts/saved.ts). */
const READ_ONLY_FRAME = new Uint8Array([READ_ONLY_MESSAGE_TYPE])
