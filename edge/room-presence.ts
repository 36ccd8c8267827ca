import * as Y from 'yjs'
import * as awarenessProtocol from 'y-protocols/awareness'
import { CloseCode } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'
import { awarenessMessage } from './protocol.ts'
import type { EdgeMetrics } from './metrics.ts'
import { AWARENESS_DEFAULTS, AwarenessGuard, PEER, type AwarenessLimits } from './awareness-guard.ts'
import type { RoomClient } from './room-options.ts'

/** Presence changes of a room gather this long before they go out together. */
const PRESENCE_FLUSH_MS = 50

export interface RoomPresenceOptions extends Partial<AwarenessLimits> {
  tenant: string
  docId: string
  log: Logger
  metrics: EdgeMetrics
  /** The room's clients now. */
  clients(): Iterable<RoomClient>
  /** Whether `origin` is one of the room's clients (its changes are fanned out). */
  isClient(origin: unknown): boolean
  /** Fans an awareness update out to the document's rooms on other edges, with the users of the ids this edge's sockets introduced. */
  fan(update: Uint8Array, users: [number, string][]): void
}

/**
 * The presence of one room: who may set which client ids (awareness-guard.ts), what the peers'
 * clients look like, and changes sent out together once per PRESENCE_FLUSH_MS. Never part of
 * the document or the op log.
 */
export class RoomPresence {
  /** Its Y.Doc only lends it a client id (the room's own presence stays empty). */
  private readonly awareness = new awarenessProtocol.Awareness(new Y.Doc())
  private readonly guard: AwarenessGuard<RoomClient>
  /** Presence ids changed since the last flush: for the clients, and (changed here) for the peers. */
  private readonly changed = new Set<number>()
  private readonly toFan = new Set<number>()
  private timer: NodeJS.Timeout | undefined
  /** The peer edge each presence client id came from, so a gone edge's presence can go. */
  private readonly fromPeer = new Map<number, string>()

  constructor(private readonly o: RoomPresenceOptions) {
    this.guard = new AwarenessGuard({
      maxAwarenessBytes: o.maxAwarenessBytes ?? AWARENESS_DEFAULTS.maxAwarenessBytes,
      awarenessPerSecond: o.awarenessPerSecond ?? AWARENESS_DEFAULTS.awarenessPerSecond,
      awarenessBurst: o.awarenessBurst ?? AWARENESS_DEFAULTS.awarenessBurst,
      awarenessIdsPerSocket: o.awarenessIdsPerSocket ?? AWARENESS_DEFAULTS.awarenessIdsPerSocket,
    })
    this.awareness.setLocalState(null)
    this.awareness.on('update', (change: AwarenessChange, origin: unknown) => this.onUpdate(change, origin))
  }

  /** Every presence state as one frame; null when there is none. */
  stateFrame(): Uint8Array | null {
    const ids = [...this.awareness.getStates().keys()]
    return ids.length > 0 ? awarenessMessage(awarenessProtocol.encodeAwarenessUpdate(this.awareness, ids)) : null
  }

  /** The presence states this edge's clients introduced, as one awareness update for the peers, with their users; null when there is none. */
  ownUpdate(): { update: Uint8Array; users: [number, string][] } | null {
    const ids = [...this.awareness.getStates().keys()].filter((id) => !this.fromPeer.has(id))
    return ids.length > 0 ? { update: awarenessProtocol.encodeAwarenessUpdate(this.awareness, ids), users: this.guard.usersOf(ids) } : null
  }

  /** Every presence state as one frame, even an empty one (the answer to a query). */
  queryFrame(): Uint8Array {
    return awarenessMessage(awarenessProtocol.encodeAwarenessUpdate(this.awareness, [...this.awareness.getStates().keys()]))
  }

  /** A client's presence frame: too big closes it with 4413, over the rate is dropped, foreign ids and ids past the socket's cap are refused. */
  receive(client: RoomClient, update: Uint8Array): void {
    if (update.byteLength > this.guard.limits.maxAwarenessBytes) {
      this.o.metrics.tooBigRejections.inc({ tenant: this.o.tenant })
      client.close(CloseCode.MessageTooBig, 'presence state above the size limit')
      return
    }
    if (!this.guard.takeToken(client)) {
      this.o.metrics.awarenessRefused.inc({ reason: 'rate' })
      return
    }
    const admitted = this.guard.admit(client, update)
    if (admitted.refused > 0) this.o.metrics.awarenessRefused.inc({ reason: 'not-owner' }, admitted.refused)
    if (admitted.overCap > 0) this.o.metrics.awarenessRefused.inc({ reason: 'ids-per-socket' }, admitted.overCap)
    if (admitted.update) awarenessProtocol.applyAwarenessUpdate(this.awareness, admitted.update, client)
  }

  /** Presence a peer edge fanned out (`users`: those of the ids its sockets introduced); a malformed one is dropped. */
  receiveFromPeer(payload: Uint8Array, edgeId: string, users: [number, string][]): void {
    try {
      const admitted = this.guard.admit(PEER, payload, Date.now(), users)
      if (admitted.refused > 0) this.o.metrics.awarenessRefused.inc({ reason: 'not-owner' }, admitted.refused)
      for (const id of admitted.ids) this.fromPeer.set(id, edgeId)
      if (admitted.update) awarenessProtocol.applyAwarenessUpdate(this.awareness, admitted.update, 'fan')
    } catch (err) {
      this.o.log.warn({ err, tenant: this.o.tenant, docId: this.o.docId }, 'bad presence from a peer dropped')
    }
  }

  /** The peer edge `edgeId` is gone (edge/peer-edges.ts): its clients' presence goes too. */
  peerGone(edgeId: string): void {
    const ids: number[] = []
    for (const [id, from] of this.fromPeer) {
      if (from !== edgeId) continue
      this.fromPeer.delete(id)
      if (this.awareness.getStates().has(id)) ids.push(id)
    }
    if (ids.length > 0) awarenessProtocol.removeAwarenessStates(this.awareness, ids, 'peer-gone')
  }

  /** A client left: the presence it introduced goes. */
  leave(client: RoomClient): void {
    const ids = this.guard.release(client).filter((id) => this.awareness.getStates().has(id))
    if (ids.length > 0) awarenessProtocol.removeAwarenessStates(this.awareness, ids, 'leave')
  }

  /** Sends what is pending (the last client's departure still reaches the peers) and stops. */
  close(): void {
    clearTimeout(this.timer)
    this.flush()
    this.awareness.destroy()
  }

  private onUpdate({ added, updated, removed }: AwarenessChange, origin: unknown): void {
    if (removed.length > 0) {
      this.guard.removed(removed)
      for (const id of removed) this.fromPeer.delete(id)
    }
    const fan = this.o.isClient(origin) || origin === 'leave'
    for (const id of [...added, ...updated, ...removed]) {
      this.changed.add(id)
      if (fan) this.toFan.add(id)
    }
    this.timer ??= setTimeout(() => this.flush(), PRESENCE_FLUSH_MS)
  }

  /**
   * Sends what changed since the last flush as one frame to every client (its origin too:
   * y-protocols ignores its own state at an unchanged clock) and one fan-out of what local
   * clients changed: a busy room costs one frame per subscriber per interval, not per change.
   */
  private flush(): void {
    this.timer = undefined
    if (this.changed.size > 0) {
      const frame = awarenessMessage(awarenessProtocol.encodeAwarenessUpdate(this.awareness, [...this.changed]))
      this.changed.clear()
      for (const client of this.o.clients()) client.send(frame)
    }
    if (this.toFan.size > 0) {
      this.o.fan(awarenessProtocol.encodeAwarenessUpdate(this.awareness, [...this.toFan]), this.guard.usersOf(this.toFan))
      this.toFan.clear()
    }
  }
}

interface AwarenessChange {
  added: number[]
  updated: number[]
  removed: number[]
}
