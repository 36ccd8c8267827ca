import { setTimeout as sleep } from 'node:timers/promises'
import uWS from 'uWebSockets.js'
import type { NatsConnection } from '@nats-io/transport-node'
import { jetstream } from '@nats-io/jetstream'
import { CloseCode } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'
import { serveOps, type OpsServer } from '../runtime/ops-server.ts'
import { EdgeOptionsError } from './errors.ts'
import { serveHealth } from './http.ts'
import { serveIngest } from './http-ingest.ts'
import { EdgeAdmission } from './admission.ts'
import { sendFanRefetch, sendFanUpdate } from './fan-link.ts'
import { createEdgeMetrics, type EdgeMetrics } from './metrics.ts'
import { UpdatePublisher } from './publisher.ts'
import { Room } from './room.ts'
import { TenantAdmission } from './tenants.ts'
import { Revocations } from '../runtime/revocations.ts'
import { PeerEdges } from './peer-edges.ts'
import { EdgeLimiter, connectionBurstBytes } from './limits.ts'
import { DEFAULT_MAX_BUFFERED_BYTES, messageLimit, type EdgeOptions } from './options.ts'
import { CommitWatch } from './commit-watch.ts'
import { watchDocNotices } from './doc-notices.ts'
import { ClosedRooms } from './closed-rooms.ts'
import { EdgeSockets, type SocketData } from './edge-sockets.ts'

/** Serves the y-websocket protocol to clients and publishes their updates to JetStream. */
export class Edge {
  readonly metrics: EdgeMetrics
  private readonly rooms = new Map<string, Room>()
  private readonly closedRooms = new ClosedRooms()
  private readonly publisher: UpdatePublisher
  private readonly inFlight = new Set<Promise<unknown>>()
  private tenants: TenantAdmission | null = null
  private revocations: Revocations | null = null
  private docNotices: { unsubscribe(): void } | null = null
  private readonly peers: PeerEdges
  private readonly sockets: EdgeSockets
  private listenSocket: uWS.us_listen_socket | null = null
  private ops: OpsServer | null = null
  private stopping = false
  /** Publishes still unacked when stop() closed the publisher. */
  private unackedAtClose = 0
  /** Frame and update limit, checked against the server's max_payload at construction. */
  private readonly maxMessageBytes: number
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
    const maxBufferedBytes = opts.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES
    if (!(maxBufferedBytes > 0)) throw new EdgeOptionsError(`maxBufferedBytes must be positive, got ${maxBufferedBytes}`)
    this.peers = new PeerEdges(nc, opts.edgeId, log, (edgeId) => {
      for (const room of this.rooms.values()) room.peerGone(edgeId)
    })
    this.commits = new CommitWatch(nc, opts.edgeId, this.metrics, log)
    this.limiter = new EdgeLimiter(opts.limits, () => this.peers.liveCount, this.maxMessageBytes, this.metrics, log)
    this.admission = new EdgeAdmission({ tokens: opts.tokens, clientIpHeader: opts.clientIpHeader, limiter: this.limiter, metrics: this.metrics, log, revocations: () => this.revocations!, tenants: () => this.tenants! })
    this.sockets = new EdgeSockets({
      admission: this.admission,
      limiter: this.limiter,
      commits: this.commits,
      metrics: this.metrics,
      log,
      maxMessageBytes: this.maxMessageBytes,
      maxBufferedBytes,
      clockToleranceS: opts.tokens.clockToleranceS,
      stopping: () => this.stopping,
      room: (tenant, docId) => this.room(tenant, docId),
    })
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
    this.revocations = await Revocations.open(this.nc, 1_000, this.log, (r) => this.sockets.closeRevoked(r))
    this.peers.start()
    this.commits.start()
    this.docNotices = watchDocNotices(this.nc, this.log, (tenant, docId) => {
      this.closedRooms.deleted(roomKey(tenant, docId))
      this.rooms.get(roomKey(tenant, docId))?.fail(CloseCode.DocumentDeleted, 'document deleted')
    })
    const healthy = () => !this.stopping && !this.nc.isClosed() && this.listenSocket !== null
    this.ops = await serveOps({ port: this.opts.opsPort, host: this.opts.opsHost ?? '127.0.0.1', registry: this.metrics.registry, healthy })
    const app = uWS.App()
    serveHealth(app, healthy)
    serveIngest(app, jetstream(this.nc), {
      admit: (token, docId) => this.admission.token(token, docId),
      maxBodyBytes: this.maxMessageBytes,
      ackTimeoutMs: this.opts.publishAckTimeoutMs,
      edgeId: this.opts.edgeId,
      stored: (tenant, docId, userId, update, duplicate) => this.storedOverHttp(tenant, docId, userId, update, duplicate),
      stopping: () => this.stopping,
      limiter: this.limiter,
      clientIp: (res, req) => this.admission.clientIp(res, req),
      wouldPassSizeLimit: (tenant, docId, bytes) => this.rooms.get(roomKey(tenant, docId))?.wouldPassSizeLimit(bytes) ?? false,
      lacksDependencies: (tenant, docId, shape) => this.rooms.get(roomKey(tenant, docId))?.lacksDependencies(shape) ?? false,
      foreignClient: (tenant, docId, userId, update) => this.rooms.get(roomKey(tenant, docId))?.foreignClient(userId, update) ?? false,
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
      upgrade: (res, req, context) => this.sockets.upgrade(res, req, context),
      open: (ws) => this.sockets.open(ws),
      message: (ws, message) => this.sockets.message(ws, message),
      close: (ws, code, message) => this.sockets.closed(ws, code, message),
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

  /**
   * A POSTed update JetStream stored: to the document's clients here, and on other edges. On a
   * duplicate, whose first try may never have been fanned out, every room of the document
   * refetches from core instead (this edge's own fan-out never comes back to it: noEcho).
   */
  private storedOverHttp(tenant: string, docId: string, userId: string, update: Uint8Array, duplicate: boolean): void {
    const room = this.rooms.get(roomKey(tenant, docId))
    if (duplicate) {
      room?.refetch('http-duplicate')
      sendFanRefetch(this.nc, tenant, docId, `${this.opts.edgeId}/http`, this.log, this.metrics)
    } else if (room) room.acceptDurable(update, userId)
    else sendFanUpdate(this.nc, tenant, docId, `${this.opts.edgeId}/http`, update, userId, this.log, this.metrics)
  }

  /** A tenant was suspended or removed: its sockets go now, not at their next reconnect. */
  private revoke(tenant: string, reason: string): void {
    this.closedRooms.forget((key) => key.startsWith(roomKey(tenant, '')))
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
        overLimit: (client, limit) => this.sockets.closeOverLimit(client, tenant, docId, limit),
        poisoned: (client) => this.limiter.poisoned(tenant, client.userId),
        publish: (update, userId, savedNotice) => this.track(this.publisher.publish(tenant, docId, userId, update, savedNotice)),
        leftover: this.closedRooms.take(key),
        onClosed: (closed, leftover) => {
          if (this.rooms.get(key) === closed) this.rooms.delete(key)
          if (leftover) this.closedRooms.keep(key, leftover)
          this.metrics.rooms.set(this.rooms.size)
        },
        ackedAfterClose: (update, userId) => {
          if (this.closedRooms.deletedLately(key)) return // deleted or erased since: its content goes nowhere
          const successor = this.rooms.get(key)
          if (successor) successor.acceptDurable(update, userId)
          else this.closedRooms.addLate(key, update)
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

/** Key of a room in Edge.rooms. */
const roomKey = (tenant: string, docId: string) => `${tenant}\0${docId}`
