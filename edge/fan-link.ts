import { randomBytes } from 'node:crypto'
import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import { FanKind, ServiceSubjects, decodeFan, encodeFan, type FanMessage } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'
import type { EdgeMetrics } from './metrics.ts'

export interface FanLinkOptions {
  nc: NatsConnection
  tenant: string
  docId: string
  edgeId: string
  log: Logger
  metrics: EdgeMetrics
}

/** What a room does with what its peers fan out. */
/** How long a room's fan stream stays quiet before its last sequence is sent (FanKind.Last). */
export const FAN_LAST_AFTER_MS = 1_000

export interface FanHandlers {
  /** A durable update from a peer edge, sent by `userId` when named; `gap`: at least one of that peer's updates was missed. */
  update(payload: Uint8Array, gap: boolean, stream: string, seq: number, userId: string | undefined): void
  /** Presence from the peer edge `edgeId`, with the users of the ids its sockets introduced. */
  awareness(payload: Uint8Array, edgeId: string, users: [number, string][]): void
  /** Core holds an update no edge fanned out: pull it. */
  refetch(): void
  /** A peer stream's last update never came (its burst's end was lost on the way): fetch it. */
  missed(stream: string, seq: number): void
}

/**
 * Peer room streams a room keeps the last sequence of. Each room instance on another edge that
 * fanned out is one, and rooms come and go with their clients: without a bound, a long-lived
 * room kept one per visit of a writer elsewhere. A stream forgotten and heard again counts as a
 * gap (first seen past seq 1): one refetch, nothing missed.
 */
const MAX_PEER_STREAMS = 64

/**
 * A room's link to the rooms of the same document on other edges, over core NATS (which may
 * drop a message). Invariants:
 * - every update a room fans out carries the next sequence of its own stream (one per room
 *   instance), so a peer that sees a sequence skip knows it missed an acked update and can
 *   fetch it; a lost fan-out never goes unnoticed past the next one;
 * - updates are fanned out only once another edge is known to hold the document (it asked
 *   this room for its state, answered ours, or fanned out itself). A peer asks for the room's
 *   state before anything of ours can reach it, and everything acked before that question is
 *   in the answer, so skipping the fan-out while alone loses nothing; the first update sent
 *   is seq 1 of the stream, so a new peer sees no gap. Most documents are open on one edge:
 *   they cost no fan-out message at all;
 * - once its stream has been quiet FAN_LAST_AFTER_MS, a room sends its last sequence: the last
 *   update of a burst, lost, has no next one to reveal the gap.
 */
export class FanLink {
  private readonly stream: string
  private seq = 0
  private readonly peerSeqs = new Map<string, number>()
  private peers = false
  private readonly sub: Subscription
  /** When the stream's last update went out; the timer that sends its last sequence once quiet. */
  private lastSentAtMs = 0
  private lastTimer: NodeJS.Timeout | null = null

  constructor(
    private readonly o: FanLinkOptions,
    handlers: FanHandlers,
  ) {
    this.stream = `${o.edgeId}/${randomBytes(6).toString('base64url')}`
    this.sub = o.nc.subscribe(ServiceSubjects.fan(o.tenant, o.docId), {
      callback: (err, msg) => (err ? o.log.warn({ err }, 'fan subscription') : this.receive(msg.data, handlers)),
    })
  }

  /** Another edge holds the document: from now on updates are fanned out. */
  peerSeen(): void {
    this.peers = true
  }

  sendUpdate(update: Uint8Array, userId: string): void {
    if (!this.peers) return
    this.send({ kind: FanKind.Update, edgeId: this.o.edgeId, stream: this.stream, seq: ++this.seq, payload: update, userId })
    this.lastSentAtMs = Date.now()
    this.lastTimer ??= setTimeout(() => this.sendLastWhenQuiet(), FAN_LAST_AFTER_MS)
  }

  /** One timer per burst, not one per update: it waits out the rest of the quiet time when updates came meanwhile. */
  private sendLastWhenQuiet(): void {
    const quietMs = Date.now() - this.lastSentAtMs
    if (quietMs < FAN_LAST_AFTER_MS) {
      this.lastTimer = setTimeout(() => this.sendLastWhenQuiet(), FAN_LAST_AFTER_MS - quietMs)
      return
    }
    this.lastTimer = null
    this.send({ kind: FanKind.Last, edgeId: this.o.edgeId, stream: this.stream, seq: this.seq })
  }

  /** `users`: the user of each presence id in it that this edge's sockets introduced. */
  sendAwareness(update: Uint8Array, users: [number, string][]): void {
    this.send({ kind: FanKind.Awareness, edgeId: this.o.edgeId, payload: update, ...(users.length > 0 && { users }) })
  }

  /** Stops listening; a last sequence still due goes out (updates acked after the close are fanned out too). */
  close(): void {
    this.sub.unsubscribe()
  }

  private receive(data: Uint8Array, handlers: FanHandlers): void {
    let msg
    try {
      msg = decodeFan(data)
    } catch (err) {
      this.o.log.warn({ err }, 'bad fan message dropped')
      return
    }
    if (msg.edgeId === this.o.edgeId) return
    this.o.metrics.fanReceived.inc({ kind: msg.kind })
    // A refetch comes from HTTP ingest, not from a room: it says nothing of peers.
    if (msg.kind === FanKind.Refetch) return handlers.refetch()
    this.peers = true
    if (msg.kind === FanKind.Update) handlers.update(msg.payload, !msg.single && this.trackPeerSeq(msg.stream, msg.seq), msg.stream, msg.seq, msg.userId)
    else if (msg.kind === FanKind.Last) {
      if ((this.peerSeqs.get(msg.stream) ?? 0) >= msg.seq) return
      this.heard(msg.stream, msg.seq)
      handlers.missed(msg.stream, msg.seq)
    } else handlers.awareness(msg.payload, msg.edgeId, msg.users ?? [])
  }

  /**
   * True when `seq` is not the next one of `stream`. A stream first seen past seq 1 counts too:
   * its earlier updates may have been acked after our load and lost on the way.
   */
  private trackPeerSeq(stream: string, seq: number): boolean {
    const last = this.peerSeqs.get(stream) ?? 0
    if (seq <= last) return false // a late duplicate; applying it again is a no-op
    this.heard(stream, seq)
    return seq !== last + 1
  }

  /** `stream` is at `seq`: most recently heard last; past the bound the longest quiet goes (a closed peer room's, mostly). */
  private heard(stream: string, seq: number): void {
    this.peerSeqs.delete(stream)
    this.peerSeqs.set(stream, seq)
    if (this.peerSeqs.size > MAX_PEER_STREAMS) this.peerSeqs.delete(this.peerSeqs.keys().next().value!)
  }

  private send(msg: FanMessage): void {
    sendFan(this.o.nc, this.o.tenant, this.o.docId, msg, this.o.log, this.o.metrics)
  }
}

/**
 * One durable update fanned out by a sender without a room (HTTP ingest): a stream of its own
 * with this single update as seq 1, marked `single` so rooms keep no sequence for it (one entry
 * per POST would pile up in an open room). A room that gets it counts a peer.
 */
export function sendFanUpdate(nc: NatsConnection, tenant: string, docId: string, sender: string, update: Uint8Array, userId: string, log: Logger, metrics: EdgeMetrics): void {
  sendFan(nc, tenant, docId, { kind: FanKind.Update, edgeId: sender, stream: `${sender}/${randomBytes(6).toString('base64url')}`, seq: 1, payload: update, single: true, userId }, log, metrics)
}

/** Tells the document's rooms on every other edge to refetch from core (FanKind.Refetch). */
export function sendFanRefetch(nc: NatsConnection, tenant: string, docId: string, sender: string, log: Logger, metrics: EdgeMetrics): void {
  sendFan(nc, tenant, docId, { kind: FanKind.Refetch, edgeId: sender }, log, metrics)
}

function sendFan(nc: NatsConnection, tenant: string, docId: string, msg: FanMessage, log: Logger, metrics: EdgeMetrics): void {
  try {
    nc.publish(ServiceSubjects.fan(tenant, docId), encodeFan(msg))
    metrics.fanSent.inc({ kind: msg.kind })
  } catch (err) {
    // The connection is closed: peers notice the gap by sequence, or reload.
    log.warn({ err, tenant, docId, kind: msg.kind }, 'fan-out not sent')
  }
}
