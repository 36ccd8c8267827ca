import type { NatsConnection } from '@nats-io/transport-node'
import type { Limit } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'
import type { AwarenessLimits } from './awareness-guard.ts'
import type { EdgeMetrics } from './metrics.ts'
import type { PublishedRef } from './publish-lanes.ts'
import type { Room } from './room.ts'
import type { RoomLeftover } from './closed-rooms.ts'

/** One client socket as a room sees it. */
export interface RoomClient {
  readonly userId: string
  readonly canEdit: boolean
  send(frame: Uint8Array): void
  close(code: number, reason: string): void
}

export interface RoomOptions extends Partial<AwarenessLimits> {
  tenant: string
  docId: string
  edgeId: string
  nc: NatsConnection
  log: Logger
  metrics: EdgeMetrics
  /** Publishes an update durably (JetStream ack); rejects when it could not. `savedNotice`: its sender wants the saved signal. */
  publish: (update: Uint8Array, userId: string, savedNotice: boolean) => Promise<PublishedRef>
  /** How long to wait for core's or a peer edge's state when the room opens. */
  stateTimeoutMs: number
  /**
   * After opening, after a missed fan-out and after a NATS reconnect, ask core again this much
   * later for what it materialized meanwhile (core commits a few ms after the JetStream ack).
   */
  resyncDelayMs: number
  /** Size the document may grow to (edge/limits.ts maxDocumentBytes). */
  maxDocumentBytes: number
  /** A client's update would pass a limit: the edge counts it and closes the client with the limit's code. */
  overLimit: (client: RoomClient, limit: Limit) => void
  /** A client's update did not apply (it is being closed with 4422): the edge holds its user off for a while. */
  poisoned: (client: RoomClient) => void
  /** What the last room of this document on this edge held when it closed a moment ago (edge/closed-rooms.ts): loaded beside core's state. */
  leftover: RoomLeftover | null
  /** Called once the room is closed for good; with what it holds when it closed as its last client left after recent writes. */
  onClosed: (room: Room, leftover: RoomLeftover | null) => void
  /** An update acked after the room closed, by `userId`: for the document's next room. */
  ackedAfterClose: (update: Uint8Array, userId: string) => void
}
