import * as Y from 'yjs'
import { CloseCode, ServiceSubjects, type StateReply } from '../contracts/mod.ts'
import { requestState } from '../runtime/state-transfer.ts'
import { writtenEnds } from '../runtime/yjs-items.ts'
import type { UpdateShape } from './update-shape.ts'
import {
  isEmptyStateVector,
  syncStep1Message,
  syncStep2Message,
  updateMessage,
  type ClientMessage,
} from './protocol.ts'
import { RoomLoadError, isPublishError } from './errors.ts'
import type { Receipt } from './saved-receipts.ts'
import { RoomPresence } from './room-presence.ts'
import { RoomDoc } from './room-doc.ts'
import { onReconnect } from './nats-reconnect.ts'
import { FanLink } from './fan-link.ts'
import type { RoomClient, RoomOptions } from './room-options.ts'
import { LEFTOVER_KEEP_MS } from './closed-rooms.ts'
import { RoomResync } from './room-resync.ts'
import { RoomPeers } from './room-peers.ts'
import { RoomIngest, type Member } from './room-ingest.ts'

/**
 * A document open on this edge. Invariants:
 * - the room's doc holds only updates JetStream has acked (edge/room-doc.ts), so whatever the
 *   room serves (to clients, peers, fan-out) is durable, and a client whose edit failed to
 *   publish still holds it and resends it on resync;
 * - what the room publishes always applies (edge/room-ingest.ts): a client update is first
 *   tried on the probe (edge/update-probe.ts) and published only when it integrated whole; a
 *   poisoned one closes its sender alone with 4422, one with missing dependencies is dropped and
 *   its sender asked to resync (its reply carries the dependencies);
 * - every acked update is fanned out with this room's stream id and the next sequence number,
 *   even when the room closed meanwhile; a peer that sees a gap refetches from core.
 */
export class Room {
  private readonly state: RoomDoc
  private readonly presence: RoomPresence
  private readonly clients = new Map<RoomClient, Member>()
  private readonly waiting = new Map<RoomClient, [ClientMessage, Receipt | undefined][]>()
  private readonly ingest: RoomIngest
  private readonly peers: RoomPeers
  private readonly fanLink: FanLink
  private readonly stopReconnectWatch: () => void
  private readonly coreResync: RoomResync
  private ready = false
  private closed = false
  /**
   * The document's size as this room counts it: the state it loaded plus every update since
   * (acked, from peers, from core). Overlaps count twice, so it errs high, never low.
   */
  private documentBytes = 0
  /** When a client update of this room was last acked (0: never): a room closing soon after leaves its state for its successor. */
  private lastAckedAtMs = 0
  /** The room closed as its last client left after recent writes: its state, and what is acked later, go to its successor. */
  private leftState = false

  constructor(private readonly o: RoomOptions) {
    this.state = new RoomDoc(
      {
        integrated: (update, origin) => this.sendToOthers(update, origin),
        broken: (err, source) => {
          this.o.metrics.roomApplyFailures.inc({ source })
          this.o.log.error({ err, tenant: o.tenant, docId: o.docId, source }, 'update did not apply to the room doc; room closed so clients reload it')
          this.fail(CloseCode.TryAgainLater, 'document reloading')
        },
      },
      o.metrics,
      o.log,
      { tenant: o.tenant, docId: o.docId },
    )
    this.ingest = new RoomIngest(o, this.state, {
      wouldPassSizeLimit: (bytes) => this.wouldPassSizeLimit(bytes),
      acked: (client, update) => this.acked(client, update),
      publishFailed: (client, update, err) => this.publishFailed(client, update, err),
    })
    this.presence = new RoomPresence({
      ...o,
      clients: () => this.clients.keys(),
      isClient: (origin) => this.clients.has(origin as RoomClient),
      fan: (update, users) => this.fanLink.sendAwareness(update, users),
    })
    // Subscribe before loading so nothing acked meanwhile is missed.
    this.fanLink = new FanLink(o, {
      update: (payload, gap, stream, seq, userId) => this.onFanUpdate(payload, gap, stream, seq, userId),
      awareness: (payload, edgeId, users) => {
        if (!this.closed) this.presence.receiveFromPeer(payload, edgeId, users)
      },
      refetch: () => this.refetch('http-duplicate'),
      missed: (stream, seq) => this.missedFanOut(stream, seq),
    })
    this.peers = new RoomPeers(o, {
      current: () => this.state.current(),
      peerSeen: () => this.fanLink.peerSeen(),
      ownPresence: () => this.presence.ownUpdate(),
      sendAwareness: (update, users) => this.fanLink.sendAwareness(update, users),
      request: (subject) => this.requestState(subject),
      apply: (update) => this.proveAndApply(update, 'fan'),
      owners: () => this.ingest.clientOwners.known(),
    })
    this.coreResync = new RoomResync({
      ...o,
      fetch: () => this.requestState(ServiceSubjects.coreState),
      found: (reply) => {
        for (const update of reply.tail ? [reply.update, reply.tail] : [reply.update]) this.proveAndApply(update, 'core')
      },
      deleted: () => this.fail(CloseCode.DocumentDeleted, 'document deleted'),
    })
    this.stopReconnectWatch = onReconnect(o.nc, o.log, () => this.coreResync.start('reconnect'))
    void this.load()
  }

  get tenant(): string {
    return this.o.tenant
  }

  get size(): number {
    return this.clients.size
  }

  /** True when `bytes` more would take the document past its size limit. */
  wouldPassSizeLimit(bytes: number): boolean {
    return this.documentBytes + bytes > this.o.maxDocumentBytes
  }

  join(client: RoomClient): void {
    this.clients.set(client, { resyncAskedAt: 0, inspectAll: false })
    if (this.ready) this.greet(client)
    else this.waiting.set(client, [])
  }

  /** A client frame; an update's `receipt` (a socket asking for the saved signal) learns its fate. */
  receive(client: RoomClient, msg: ClientMessage, receipt?: Receipt): void {
    const queue = this.waiting.get(client)
    if (queue) queue.push([msg, receipt])
    else this.handleOrReject(client, msg, receipt)
  }

  /** The peer edge `edgeId` is gone (edge/peer-edges.ts): its clients' presence goes too. */
  peerGone(edgeId: string): void {
    this.presence.peerGone(edgeId)
  }

  leave(client: RoomClient): void {
    this.ingest.release(client)
    this.clients.delete(client)
    this.waiting.delete(client)
    this.presence.leave(client)
    if (this.clients.size === 0) this.close(true)
  }

  /** Closes every client with `code` (they reconnect and resync) and drops the room. */
  fail(code: number, reason: string): void {
    for (const client of this.clients.keys()) client.close(code, reason)
    this.clients.clear()
    this.close()
  }

  /** `leaveState`: the last client left; after recent writes, what the room holds goes to its successor (edge/closed-rooms.ts). */
  close(leaveState = false): void {
    if (this.closed) return
    // Publishes still in flight count as recent writes: their acks join the leftover (ackedAfterClose).
    const recent = Date.now() - this.lastAckedAtMs < LEFTOVER_KEEP_MS || this.ingest.inFlight.size > 0
    this.leftState = leaveState && this.ready && recent
    const leftover = this.leftState ? { updates: [Y.encodeStateAsUpdate(this.state.current())], owners: this.ingest.clientOwners.known() } : null
    this.presence.close()
    this.closed = true
    this.coreResync.stop()
    this.stopReconnectWatch()
    this.fanLink.close()
    this.peers.close()
    this.state.destroy()
    this.o.onClosed(this, leftover)
  }

  private async load(): Promise<void> {
    const started = performance.now()
    let replies: (StateReply | null)[]
    try {
      replies = await Promise.all([this.requestState(ServiceSubjects.coreState), this.peers.ask()])
      if (replies.every((r) => r === null)) throw new RoomLoadError('no state source answered (core down?)')
    } catch (err) {
      this.o.log.error({ err, tenant: this.o.tenant, docId: this.o.docId }, 'room load failed')
      this.o.metrics.roomLoadFailures.inc()
      this.fail(CloseCode.TryAgainLater, 'document state unavailable')
      return
    }
    if (replies[0]?.status === 'deleted') return this.fail(CloseCode.DocumentDeleted, 'document deleted')
    if (replies[1] !== null) this.fanLink.peerSeen() // a room on another edge answered
    for (const reply of replies) {
      if (this.closed || reply?.status !== 'found') continue
      this.documentBytes += reply.update.byteLength + (reply.tail?.byteLength ?? 0)
      this.state.load(reply.update, reply.tail)
    }
    // After core's answer, as a peer's: what the last room here held may be newer than core. Most
    // often core has it all: then it changes nothing (no probe built, joiners get core's state as it came).
    if (this.o.leftover && !this.closed) {
      this.ingest.clientOwners.learn(this.o.leftover.owners, false)
      for (const update of this.o.leftover.updates) this.proveAndApply(update, 'fan')
    }
    if (this.closed) return
    this.o.metrics.roomLoadSeconds.observe((performance.now() - started) / 1000)
    this.ready = true
    // What the joiners asked first (their sync step 1: the loaded state as it came), then the
    // greetings, whose state vector applies the load.
    const joined = [...this.waiting]
    this.waiting.clear()
    for (const [client, queue] of joined) for (const [msg, receipt] of queue) this.handleOrReject(client, msg, receipt)
    for (const [client] of joined) if (this.clients.has(client)) this.greet(client)
    this.coreResync.start('open', this.o.resyncDelayMs)
  }

  /** Core's state or null when nobody answered; throws when core answered with an error. */
  private async requestState(subject: string): Promise<StateReply | null> {
    // Null: no responders (no peer has the doc open) or a timeout; this source has nothing for us.
    // Owners only with the load: later, the room learns them from its writers and the fan-out.
    const request = { tenant: this.o.tenant, docId: this.o.docId, stateVector: Y.encodeStateVector(this.state.current()), acceptsTail: true, wantsOwners: !this.ready }
    const reply = await requestState(this.o.nc, subject, request, this.o.stateTimeoutMs)
    if (reply?.status === 'error') throw new RoomLoadError(`state source failed: ${reply.message}`)
    if (reply?.status === 'found' && reply.owners) this.ingest.clientOwners.learn(reply.owners, subject === ServiceSubjects.coreState)
    return reply
  }

  private greet(client: RoomClient): void {
    client.send(syncStep1Message(this.state.current()))
    const presence = this.presence.stateFrame()
    if (presence) client.send(presence)
  }

  /**
   * After a publish the room had in flight failed (another writer's, refused for quota or size):
   * true when the room doc holds all of a client's held `update` anyway; else the client is asked
   * to sync again, and its answer carries what it has.
   */
  private stillHolds(client: RoomClient, update: Uint8Array): boolean {
    if (this.closed) return false
    if (this.state.holds(update)) return true
    client.send(syncStep1Message(this.state.current()))
    return false
  }

  /** A frame that is not valid Yjs or awareness closes only its own socket. */
  private handleOrReject(client: RoomClient, msg: ClientMessage, receipt: Receipt | undefined): void {
    try {
      this.handle(client, msg, receipt)
    } catch (err) {
      this.o.metrics.rejectedFrames.inc({ reason: msg.type })
      this.o.log.warn({ err, tenant: this.o.tenant, docId: this.o.docId, userId: client.userId }, 'bad client frame')
      client.close(CloseCode.BadRequest, `bad ${msg.type} message`)
    }
  }

  private handle(client: RoomClient, msg: ClientMessage, receipt: Receipt | undefined): void {
    switch (msg.type) {
      case 'sync-step1':
        if (!isEmptyStateVector(msg.stateVector)) client.send(syncStep2Message(this.state.current(), msg.stateVector))
        else for (const frame of this.state.fullState()) client.send(frame)
        return
      case 'update': {
        const outcome = this.ingest.take(client, this.clients.get(client), msg.update, receipt !== undefined)
        if (!receipt) return
        if (typeof outcome !== 'string') receipt.published(outcome, msg.step2)
        else if (outcome === 'held') receipt.held([...this.ingest.inFlight], msg.step2, () => this.stillHolds(client, msg.update))
        else if (outcome === 'dropped') receipt.dropped()
        else if (outcome === 'settled') receipt.settle()
        return
      }
      case 'awareness':
        this.presence.receive(client, msg.update)
        return
      case 'query-awareness':
        client.send(this.presence.queryFrame())
        return
    }
  }

  /**
   * Durable now: peers hear of it even when this room closed meanwhile, the other clients get
   * it as it came, and it waits in `unmerged` for the room doc. When the room doc holds pending
   * structs, the update may integrate them: it goes in at once, announcing what integrated.
   */
  private acked(client: RoomClient, update: Uint8Array): void {
    this.documentBytes += update.byteLength
    this.lastAckedAtMs = Date.now()
    this.fanLink.sendUpdate(update, client.userId)
    // Only a room that left its state to its successor: one closed otherwise (deleted, erased, failed) hands on nothing.
    if (this.closed) return this.leftState ? this.o.ackedAfterClose(update, client.userId) : undefined
    if (!this.state.acked(update, client)) return
    this.sendToOthers(update, client)
  }

  private publishFailed(client: RoomClient, update: Uint8Array, err: unknown): void {
    if (this.closed) return
    this.state.probe.release(update, false)
    if (isPublishError(err) && err.kind === 'quota') {
      // Only the writer goes: it keeps its edit and resends it once the quota allows.
      this.o.log.warn({ tenant: this.o.tenant, docId: this.o.docId, userId: client.userId }, 'tenant storage quota exceeded; edit refused')
      client.close(CloseCode.QuotaExceeded, 'tenant storage quota exceeded')
      return
    }
    if (isPublishError(err) && err.kind === 'too-big') {
      // Resending cannot help and co-editors are not at fault: only the writer goes.
      this.o.log.warn({ tenant: this.o.tenant, docId: this.o.docId, userId: client.userId }, 'update above the server max_payload; writer closed')
      client.close(CloseCode.MessageTooBig, 'update too big')
      return
    }
    this.o.log.error({ err, tenant: this.o.tenant, docId: this.o.docId }, 'publish failed; closing room so clients resync')
    this.fail(CloseCode.TryAgainLater, 'edit not saved, resyncing')
  }

  /** Pulls what core has that the room may lack (an HTTP retry JetStream had stored already). */
  refetch(reason: 'http-duplicate'): void {
    if (this.ready) this.coreResync.start(reason)
  }

  /** A durable update `userId` sent without a socket (HTTP ingest): to the clients and the peers. */
  acceptDurable(update: Uint8Array, userId: string): void {
    if (this.closed) return
    // Before the load, the room holds nothing to tell new clocks by; the load brings the owners.
    if (this.ready) this.ingest.clientOwners.wroteElsewhere(userId, this.state.probe.clientsPast(writtenEnds(Y.decodeUpdate(update).structs)))
    this.fanLink.sendUpdate(update, userId)
    this.proveAndApply(update, 'http')
  }

  /** True when `update` (an HTTP update by `userId`) has new structs under a client id another user owns: HTTP ingest refuses it (403). */
  foreignClient(userId: string, update: Uint8Array): boolean {
    return this.ingest.clientOwners.foreignTo(userId, this.state.probe.clientsPast(writtenEnds(Y.decodeUpdate(update).structs)))
  }

  /** True when this room is loaded and holds less than `shape` (an HTTP update) needs: HTTP ingest refuses it (409). */
  lacksDependencies(shape: UpdateShape): boolean {
    return this.ready && this.state.probe.lacks(shape)
  }

  /** An update from core, a peer or HTTP ingest; one that does not apply is skipped and counted. */
  private proveAndApply(update: Uint8Array, source: 'core' | 'fan' | 'http'): void {
    this.documentBytes += update.byteLength
    const poisoned = this.state.applyTrusted(update, source)
    if (poisoned !== null) this.skipped(source, poisoned)
  }

  private skipped(source: string, reason: string): void {
    this.o.metrics.roomApplyFailures.inc({ source })
    this.o.log.error({ tenant: this.o.tenant, docId: this.o.docId, source, reason }, 'update from a trusted source does not apply; skipped')
  }

  /** An update the clients may lack (acked, or integrated into the room doc): to every client but its origin. */
  private sendToOthers(update: Uint8Array, origin: unknown): void {
    if (!this.ready) return
    const frame = updateMessage(update)
    for (const client of this.clients.keys()) if (client !== origin) client.send(frame)
  }

  private onFanUpdate(payload: Uint8Array, gap: boolean, stream: string, seq: number, userId: string | undefined): void {
    if (this.closed) return
    this.documentBytes += payload.byteLength
    const foreign = userId !== undefined && this.ready && this.foreignFromPeer(payload, userId)
    const taken = foreign ? 'structs under a client id another user owns' : this.state.acceptPeer(payload)
    if (taken === true) this.sendToOthers(payload, null)
    else if (taken !== false) this.skipped('fan', taken)
    if (gap) this.missedFanOut(stream, seq)
  }

  /** A peer's fanned-out update before `seq` of `stream` never came: fetched from core and the peers. */
  private missedFanOut(stream: string, seq: number): void {
    if (this.closed) return
    this.o.metrics.fanGaps.inc()
    this.o.log.info({ tenant: this.o.tenant, docId: this.o.docId, stream, seq }, 'missed a fanned-out update; refetching from core and the peers')
    if (!this.ready) return
    this.coreResync.start('gap')
    // Core may not hold it yet (behind, or down past the resync's retries): the room that fanned it does.
    this.peers.afterGap()
  }

  /**
   * True when a peer's update by `userId` writes new structs under a client id another user owns: a peer's
   * HTTP post that its edge, holding no room, could not refuse. Core refuses it, so the clients
   * here must not get it either (the real author's next update would overlap it and be refused).
   * In stream order nobody can name a client id before its owner's first update, so what this
   * room knows of it is what core knows. Otherwise the room learns that the sender owns its ids.
   */
  private foreignFromPeer(update: Uint8Array, userId: string): boolean {
    const ids = this.state.probe.clientsPast(writtenEnds(Y.decodeUpdate(update).structs))
    if (this.ingest.clientOwners.foreignTo(userId, ids)) return true
    this.ingest.clientOwners.wroteElsewhere(userId, ids)
    return false
  }
}
