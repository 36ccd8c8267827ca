import uWS from 'uWebSockets.js'
import type { NatsConnection } from '@nats-io/transport-node'
import { CloseCode, DocId, Role, docAllowed, type Claims } from '../contracts/mod.ts'
import { isTokenError, verifyToken, type TokenPolicy } from '../runtime/jwt.ts'
import type { Logger } from '../runtime/log.ts'
import { serveHealth } from './http.ts'
import { createEdgeMetrics, type EdgeMetrics } from './metrics.ts'
import { ProtocolError, parseClientMessage } from './protocol.ts'
import { UpdatePublisher } from './publisher.ts'
import { Room, type RoomClient } from './room.ts'
import { TenantDirectory } from './tenants.ts'

export interface EdgeOptions {
  /** Listen port; 0 picks a free one. Default 8080. */
  port: number
  /** Listen address. Default 0.0.0.0. */
  host: string
  /** Unique per process; fan-out skips its own messages by it. */
  edgeId: string
  /** How client tokens are verified. */
  tokens: TokenPolicy
  /** Largest client frame accepted. Default 16 MiB (a first sync of a big doc). */
  maxMessageBytes: number
  /** Wait for core's / peers' state when a room opens. Default 3_000. */
  stateTimeoutMs: number
  /** Second look at core's state after a room opens. Default 1_500. */
  resyncDelayMs: number
  /** JetStream ack timeout per attempt. Default 2_000. */
  publishAckTimeoutMs: number
  /** Publish attempts before the room resyncs its clients. Default 5. */
  publishAttempts: number
  /** Dev only: provision a tenant seen for the first time. Default false. */
  autoProvisionTenants: boolean
}

/** What a socket carries from upgrade to close. */
type SocketData =
  | { ok: false; code: number; reason: string }
  | { ok: true; tenant: string; docId: string; claims: Claims; client?: SocketClient; room?: Room }

type Socket = uWS.WebSocket<SocketData>

/** Serves the y-websocket protocol to clients and publishes their updates to JetStream. */
export class Edge {
  readonly metrics: EdgeMetrics
  private readonly rooms = new Map<string, Room>()
  private readonly publisher: UpdatePublisher
  private readonly inFlight = new Set<Promise<void>>()
  private tenants: TenantDirectory | null = null
  private listenSocket: uWS.us_listen_socket | null = null
  private stopping = false

  constructor(
    private readonly opts: EdgeOptions,
    private readonly nc: NatsConnection,
    private readonly log: Logger,
    metrics?: EdgeMetrics,
  ) {
    this.metrics = metrics ?? createEdgeMetrics()
    this.publisher = new UpdatePublisher(nc, opts.edgeId, this.metrics, { ackTimeoutMs: opts.publishAckTimeoutMs, attempts: opts.publishAttempts })
  }

  /** Starts listening; resolves with the bound port. */
  async start(): Promise<number> {
    this.tenants = await TenantDirectory.open(this.nc, { autoProvision: this.opts.autoProvisionTenants, provisionTimeoutMs: 15_000 }, this.log, (tenant, reason) => this.revoke(tenant, reason))
    const app = uWS.App()
    serveHealth(app, () => !this.stopping && !this.nc.isClosed(), this.metrics.registry)
    app.ws<SocketData>('/*', {
      maxPayloadLength: this.opts.maxMessageBytes,
      idleTimeout: 60,
      sendPingsAutomatically: true,
      upgrade: (res, req, context) => this.upgrade(res, req, context),
      open: (ws) => this.open(ws),
      message: (ws, message) => this.message(ws, message),
      close: (ws) => this.closed(ws),
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

  /** Stops taking sockets, tells clients to reconnect elsewhere (1012), waits for in-flight publishes. */
  async stop(): Promise<void> {
    this.stopping = true
    this.tenants?.stop()
    if (this.listenSocket) uWS.us_listen_socket_close(this.listenSocket)
    this.listenSocket = null
    await Promise.allSettled([...this.inFlight])
    for (const room of [...this.rooms.values()]) room.fail(CloseCode.ServiceRestart, 'edge restarting')
  }

  private upgrade(res: uWS.HttpResponse, req: uWS.HttpRequest, context: uWS.us_socket_context_t): void {
    const path = req.getUrl()
    const token = req.getQuery('token') ?? ''
    const key = req.getHeader('sec-websocket-key')
    const protocol = req.getHeader('sec-websocket-protocol')
    const extensions = req.getHeader('sec-websocket-extensions')
    let aborted = false
    res.onAborted(() => {
      aborted = true
    })
    // Always upgrade: a close code is the only refusal a browser WebSocket can read.
    void this.authorize(path, token).then((data) => {
      if (!aborted) res.cork(() => res.upgrade(data, key, protocol, extensions, context))
    })
  }

  private async authorize(path: string, token: string): Promise<SocketData> {
    if (this.stopping) return { ok: false, code: CloseCode.ServiceRestart, reason: 'edge restarting' }
    let docId: string
    try {
      docId = DocId.parse(decodeURIComponent(path.slice(1)))
    } catch {
      return { ok: false, code: CloseCode.BadRequest, reason: 'bad document id in URL' }
    }
    let claims: Claims
    try {
      claims = await verifyToken(token, this.opts.tokens)
    } catch (err) {
      if (!isTokenError(err)) this.log.error({ err }, 'token verification crashed')
      return { ok: false, code: CloseCode.Unauthorized, reason: isTokenError(err) ? err.message : 'invalid token' }
    }
    if (!docAllowed(claims, docId)) return { ok: false, code: CloseCode.Forbidden, reason: 'token does not cover this document' }
    const admission = await this.tenants!.admit(claims.tenant)
    if (!admission.ok) {
      this.metrics.tenantRefusals.inc()
      return { ok: false, code: CloseCode.Forbidden, reason: admission.reason }
    }
    return { ok: true, tenant: claims.tenant, docId, claims }
  }

  private open(ws: Socket): void {
    const data = ws.getUserData()
    if (!data.ok) {
      this.metrics.closes.inc({ code: data.code })
      ws.end(data.code, data.reason)
      return
    }
    this.metrics.connections.inc()
    const client = new SocketClient(ws, data.claims, this.metrics)
    const room = this.room(data.tenant, data.docId)
    data.client = client
    data.room = room
    room.join(client)
  }

  private message(ws: Socket, message: ArrayBuffer): void {
    const data = ws.getUserData()
    if (!data.ok || !data.room || !data.client) return
    try {
      // uWS reuses the buffer after this callback returns.
      data.room.receive(data.client, parseClientMessage(new Uint8Array(message.slice(0))))
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err
      this.metrics.rejectedFrames.inc({ reason: 'frame' })
      data.client.close(CloseCode.BadRequest, err.message)
    }
  }

  private closed(ws: Socket): void {
    const data = ws.getUserData()
    if (!data.ok || !data.client) return
    data.client.markClosed()
    this.metrics.connections.dec()
    data.room?.leave(data.client)
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
    const key = `${tenant}\0${docId}`
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
        publish: (update, userId) => this.track(this.publisher.publish(tenant, docId, userId, update)),
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

  private track(p: Promise<void>): Promise<void> {
    this.inFlight.add(p)
    const done = () => this.inFlight.delete(p)
    p.then(done, done)
    return p
  }
}

/** A uWS socket as a room client; sends after close are dropped, not thrown. */
class SocketClient implements RoomClient {
  readonly userId: string
  readonly canEdit: boolean
  private open = true

  constructor(
    private readonly ws: Socket,
    claims: Claims,
    private readonly metrics: EdgeMetrics,
  ) {
    this.userId = claims.sub
    this.canEdit = claims.role === Role.Editor
  }

  send(frame: Uint8Array): void {
    if (this.open) this.ws.send(frame, true)
  }

  close(code: number, reason: string): void {
    if (!this.open) return
    this.open = false
    this.metrics.closes.inc({ code })
    this.ws.end(code, reason.slice(0, 120))
  }

  markClosed(): void {
    this.open = false
  }
}
