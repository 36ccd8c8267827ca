import * as Y from 'yjs'
import * as awarenessProtocol from 'y-protocols/awareness'
import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import {
  CloseCode,
  FanKind,
  ServiceSubjects,
  decodeFan,
  encodeFan,
  type StateReply,
} from '../contracts/mod.ts'
import { requestState, respondState } from '../runtime/state-transfer.ts'
import type { Logger } from '../runtime/log.ts'
import {
  awarenessMessage,
  inspectUpdate,
  isCoveredBy,
  syncStep1Message,
  syncStep2Message,
  updateMessage,
  type ClientMessage,
} from './protocol.ts'
import type { EdgeMetrics } from './metrics.ts'
import { RoomLoadError, isPublishError } from './errors.ts'

/** One client socket as a room sees it. */
export interface RoomClient {
  readonly userId: string
  readonly canEdit: boolean
  send(frame: Uint8Array): void
  close(code: number, reason: string): void
}

export interface RoomOptions {
  tenant: string
  docId: string
  edgeId: string
  nc: NatsConnection
  log: Logger
  metrics: EdgeMetrics
  /** Publishes an update durably (JetStream ack); rejects when it could not. */
  publish: (update: Uint8Array, userId: string) => Promise<void>
  /** How long to wait for core's or a peer edge's state when the room opens. */
  stateTimeoutMs: number
  /** After opening, ask core again for what it materialized meanwhile (closes the load race). */
  resyncDelayMs: number
  /** Called once the room is closed for good. */
  onClosed: (room: Room) => void
}

/**
 * A document open on this edge. Invariant: the room's doc holds only updates JetStream has
 * acked, so whatever the room serves (to clients, peers, fan-out) is durable, and a client
 * whose edit failed to publish still holds it and resends it on resync.
 */
export class Room {
  readonly doc = new Y.Doc()
  readonly awareness = new awarenessProtocol.Awareness(this.doc)
  private readonly clients = new Map<RoomClient, Set<number>>()
  private readonly waiting = new Map<RoomClient, ClientMessage[]>()
  private readonly subs: Subscription[] = []
  private ready = false
  private closed = false
  private resyncTimer: NodeJS.Timeout | undefined

  constructor(private readonly o: RoomOptions) {
    this.awareness.setLocalState(null)
    this.doc.on('update', (update: Uint8Array, origin: unknown) => this.onDocUpdate(update, origin))
    this.awareness.on('update', (change: AwarenessChange, origin: unknown) => this.onAwarenessUpdate(change, origin))
    // Subscribe before loading so nothing acked meanwhile is missed.
    this.subs.push(o.nc.subscribe(ServiceSubjects.fan(o.tenant, o.docId), { callback: (err, msg) => (err ? this.o.log.warn({ err }, 'fan subscription') : this.onFan(msg.data)) }))
    this.subs.push(o.nc.subscribe(ServiceSubjects.room(o.tenant, o.docId), { callback: (_err, msg) => void (this.ready && respondState(msg, { status: 'found', update: Y.encodeStateAsUpdate(this.doc) })) }))
    void this.load()
  }

  get tenant(): string {
    return this.o.tenant
  }

  get size(): number {
    return this.clients.size
  }

  join(client: RoomClient): void {
    this.clients.set(client, new Set())
    if (this.ready) this.greet(client)
    else this.waiting.set(client, [])
  }

  receive(client: RoomClient, msg: ClientMessage): void {
    const queue = this.waiting.get(client)
    if (queue) queue.push(msg)
    else this.handleOrReject(client, msg)
  }

  leave(client: RoomClient): void {
    const ids = this.clients.get(client)
    this.clients.delete(client)
    this.waiting.delete(client)
    if (ids && ids.size > 0) awarenessProtocol.removeAwarenessStates(this.awareness, [...ids], 'leave')
    if (this.clients.size === 0) this.close()
  }

  /** Closes every client with `code` (they reconnect and resync) and drops the room. */
  fail(code: number, reason: string): void {
    for (const client of this.clients.keys()) client.close(code, reason)
    this.clients.clear()
    this.close()
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.resyncTimer)
    for (const sub of this.subs) sub.unsubscribe()
    this.awareness.destroy()
    this.doc.destroy()
    this.o.onClosed(this)
  }

  private async load(): Promise<void> {
    const started = performance.now()
    try {
      const [core, peer] = await Promise.all([this.requestState(ServiceSubjects.coreState), this.requestState(ServiceSubjects.room(this.o.tenant, this.o.docId))])
      if (core === null && peer === null) throw new RoomLoadError('no state source answered (core down?)')
      for (const reply of [core, peer]) if (reply?.status === 'found') Y.applyUpdate(this.doc, reply.update, 'load')
    } catch (err) {
      this.o.log.error({ err, tenant: this.o.tenant, docId: this.o.docId }, 'room load failed')
      this.o.metrics.roomLoadFailures.inc()
      this.fail(CloseCode.TryAgainLater, 'document state unavailable')
      return
    }
    if (this.closed) return
    this.o.metrics.roomLoadSeconds.observe((performance.now() - started) / 1000)
    this.ready = true
    for (const [client, queue] of this.waiting) {
      this.waiting.delete(client)
      this.greet(client)
      for (const msg of queue) this.handleOrReject(client, msg)
    }
    this.resyncTimer = setTimeout(() => void this.resyncFromCore(), this.o.resyncDelayMs)
  }

  /** Core's state or null when nobody answered; throws when core answered with an error. */
  private async requestState(subject: string): Promise<StateReply | null> {
    // Null: no responders (no peer has the doc open) or a timeout; this source has nothing for us.
    const reply = await requestState(this.o.nc, subject, { tenant: this.o.tenant, docId: this.o.docId, stateVector: Y.encodeStateVector(this.doc) }, this.o.stateTimeoutMs)
    if (reply?.status === 'error') throw new RoomLoadError(`state source failed: ${reply.message}`)
    return reply
  }

  /** Pulls what core materialized that this room lacks (updates acked before we subscribed). */
  private async resyncFromCore(): Promise<void> {
    if (this.closed) return
    try {
      const reply = await this.requestState(ServiceSubjects.coreState)
      if (!this.closed && reply?.status === 'found') Y.applyUpdate(this.doc, reply.update, 'load')
    } catch (err) {
      this.o.log.warn({ err, tenant: this.o.tenant, docId: this.o.docId }, 'room resync failed')
    }
  }

  private greet(client: RoomClient): void {
    client.send(syncStep1Message(this.doc))
    const states = [...this.awareness.getStates().keys()]
    if (states.length > 0) client.send(awarenessMessage(awarenessProtocol.encodeAwarenessUpdate(this.awareness, states)))
  }

  /** A frame that is not valid Yjs or awareness closes only its own socket. */
  private handleOrReject(client: RoomClient, msg: ClientMessage): void {
    try {
      this.handle(client, msg)
    } catch (err) {
      this.o.metrics.rejectedFrames.inc({ reason: msg.type })
      this.o.log.warn({ err, tenant: this.o.tenant, docId: this.o.docId, userId: client.userId }, 'bad client frame')
      client.close(CloseCode.BadRequest, `bad ${msg.type} message`)
    }
  }

  private handle(client: RoomClient, msg: ClientMessage): void {
    switch (msg.type) {
      case 'sync-step1':
        client.send(syncStep2Message(this.doc, msg.stateVector))
        return
      case 'update':
        this.ingest(client, msg.update)
        return
      case 'awareness':
        awarenessProtocol.applyAwarenessUpdate(this.awareness, msg.update, client)
        return
      case 'query-awareness':
        client.send(awarenessMessage(awarenessProtocol.encodeAwarenessUpdate(this.awareness, [...this.awareness.getStates().keys()])))
        return
    }
  }

  private ingest(client: RoomClient, update: Uint8Array): void {
    if (!client.canEdit) {
      this.o.metrics.viewerUpdatesDropped.inc()
      return
    }
    const shape = inspectUpdate(update)
    if (isCoveredBy(shape, Y.decodeStateVector(Y.encodeStateVector(this.doc)))) return
    this.o.publish(update, client.userId).then(
      () => {
        if (!this.closed) Y.applyUpdate(this.doc, update, client)
      },
      (err: unknown) => {
        if (isPublishError(err) && err.kind === 'quota') {
          // Only the writer goes: it keeps its edit and resends it once the quota allows.
          this.o.log.warn({ tenant: this.o.tenant, docId: this.o.docId, userId: client.userId }, 'tenant storage quota exceeded; edit refused')
          client.close(CloseCode.QuotaExceeded, 'tenant storage quota exceeded')
          return
        }
        this.o.log.error({ err, tenant: this.o.tenant, docId: this.o.docId }, 'publish failed; closing room so clients resync')
        this.fail(CloseCode.TryAgainLater, 'edit not saved, resyncing')
      },
    )
  }

  private onDocUpdate(update: Uint8Array, origin: unknown): void {
    if (!this.ready) return
    const frame = updateMessage(update)
    for (const client of this.clients.keys()) if (client !== origin) client.send(frame)
    if (this.clients.has(origin as RoomClient)) this.fan(FanKind.Update, update)
  }

  private onAwarenessUpdate({ added, updated, removed }: AwarenessChange, origin: unknown): void {
    const ids = this.clients.get(origin as RoomClient)
    if (ids) {
      for (const id of added) ids.add(id)
      for (const id of removed) ids.delete(id)
    }
    const changed = [...added, ...updated, ...removed]
    const update = awarenessProtocol.encodeAwarenessUpdate(this.awareness, changed)
    const frame = awarenessMessage(update)
    for (const client of this.clients.keys()) if (client !== origin) client.send(frame)
    if (ids || origin === 'leave') this.fan(FanKind.Awareness, update)
  }

  private onFan(data: Uint8Array): void {
    let msg
    try {
      msg = decodeFan(data)
    } catch (err) {
      this.o.log.warn({ err }, 'bad fan message dropped')
      return
    }
    if (msg.edgeId === this.o.edgeId) return
    this.o.metrics.fanReceived.inc({ kind: msg.kind })
    if (msg.kind === FanKind.Update) {
      Y.applyUpdate(this.doc, msg.payload, 'fan')
      // A gap means we missed something acked elsewhere: fetch it from core.
      if (this.ready && this.doc.store.pendingStructs) void this.resyncFromCore()
    } else {
      awarenessProtocol.applyAwarenessUpdate(this.awareness, msg.payload, 'fan')
    }
  }

  private fan(kind: FanKind, payload: Uint8Array): void {
    this.o.nc.publish(ServiceSubjects.fan(this.o.tenant, this.o.docId), encodeFan({ kind, edgeId: this.o.edgeId, payload }))
    this.o.metrics.fanSent.inc({ kind })
  }
}

interface AwarenessChange {
  added: number[]
  updated: number[]
  removed: number[]
}
