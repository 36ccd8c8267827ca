import * as Y from 'yjs'
import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import { ServiceSubjects, decodeStateRequest, type StateReply } from '../contracts/mod.ts'
import { respondState } from '../runtime/state-transfer.ts'
import type { Logger } from '../runtime/log.ts'
import { isEmptyStateVector } from './protocol.ts'

export interface RoomPeersOptions {
  nc: NatsConnection
  tenant: string
  docId: string
  log: Logger
}

/** What the exchange needs of its room. */
export interface RoomPeersHandlers {
  /** The room doc: what the room holds durably. */
  current(): Y.Doc
  /** Another edge holds the document: the room fans its updates out from now on. */
  peerSeen(): void
  /** The presence of the room's own clients, or null when none. */
  ownPresence(): { update: Uint8Array; users: [number, string][] } | null
  /** Fans presence out to the peer rooms. */
  sendAwareness(update: Uint8Array, users: [number, string][]): void
  /** Asks `subject` for what the room lacks (null: nobody answered). */
  request(subject: string): Promise<StateReply | null>
  /** An update a peer room held that this one lacked. */
  apply(update: Uint8Array): void
  /** Who owns which Yjs client id, as this room knows (edge/client-owners.ts). */
  owners(): [number, string][]
}

/**
 * The state exchange between the rooms of one document on different edges, on the room's
 * service subject: answers a peer's question with what it lacks by its state vector (the whole
 * state to a room opening there, with this room's presence), and after a missed fan-out asks
 * the peers for what this room lacks, one question at a time (gaps come in bursts when NATS is
 * overloaded).
 */
export class RoomPeers {
  private readonly sub: Subscription
  private fetching: Promise<void> | null = null
  private closed = false

  constructor(
    private readonly o: RoomPeersOptions,
    private readonly room: RoomPeersHandlers,
  ) {
    this.sub = o.nc.subscribe(ServiceSubjects.room(o.tenant, o.docId), {
      callback: (err, msg) => {
        if (err) return
        // noEcho: a question on this subject comes from a room on another edge. It is answered
        // even while this room still loads (what it holds is durable, maybe not all yet), so the
        // asker learns that this edge holds the document too and fans its updates out to it.
        room.peerSeen()
        let stateVector: Uint8Array | undefined
        try {
          const request = decodeStateRequest(msg.data)
          stateVector = request.stateVector
          respondState(msg, { status: 'found', update: Y.encodeStateAsUpdate(room.current(), stateVector), ...(request.wantsOwners && { owners: room.owners() }) })
        } catch (err) {
          o.log.warn({ err, tenant: o.tenant, docId: o.docId }, 'room state reply not sent')
        }
        // A room opening there (it holds nothing yet): its clients see ours now, not when each next renews their presence (15 s).
        const presence = stateVector === undefined || isEmptyStateVector(stateVector) ? room.ownPresence() : null
        if (presence) room.sendAwareness(presence.update, presence.users)
      },
    })
  }

  /** Asks the peer rooms for what this room lacks: the first answer, or null when no peer answered. */
  ask(): Promise<StateReply | null> {
    return this.room.request(ServiceSubjects.room(this.o.tenant, this.o.docId))
  }

  /** After a missed fan-out: what the first peer to answer holds beyond this room, unless a question is out already. */
  afterGap(): void {
    this.fetching ??= this.fetch().finally(() => (this.fetching = null))
  }

  close(): void {
    this.closed = true
    this.sub.unsubscribe()
  }

  private async fetch(): Promise<void> {
    try {
      const reply = await this.ask()
      if (reply?.status !== 'found' || this.closed) return
      for (const update of reply.tail ? [reply.update, reply.tail] : [reply.update]) this.room.apply(update)
    } catch (err) {
      this.o.log.warn({ err, tenant: this.o.tenant, docId: this.o.docId }, 'peer state after a fan-out gap not read')
    }
  }
}
