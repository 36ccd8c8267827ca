/**
 * The publisher's lanes and the batches cut from them (edge/publisher.ts). Invariant: a lane's
 * queue holds its tenant partition's updates in the order they were published, `queuedBytes` is
 * the sum of their `bytes`, and a batch is cut off the front of the queue, so a document's
 * updates leave in order.
 */
import type { BatchedUpdate } from '../contracts/mod.ts'
import type { PublishError } from './errors.ts'

/** Where an acked update is: the Nats-Msg-Id of the stream message that carried it and its index there. */
export interface PublishedRef {
  msgId: string
  item: number
}

/** One client update waiting for its stream ack. */
export interface QueuedUpdate extends BatchedUpdate {
  bytes: number
  /** When it joined its lane's queue (Date.now()). */
  queuedAtMs: number
  /** Its socket asked for the saved signal: its message asks core for a CommittedNotice. */
  savedNotice: boolean
  resolve: (ref: PublishedRef) => void
  reject: (err: PublishError) => void
}

/** Updates of one tenant partition, published one batch at a time so a document stays in order. */
export interface Lane {
  tenant: string
  partition: number
  queue: QueuedUpdate[]
  queuedBytes: number
  inFlight: Batch | null
}

/** A stream message on its way: sent, retried with the same msg id until acked or out of attempts. */
export interface Batch {
  lane: Lane
  token: string
  msgId: string
  payload: Uint8Array
  updates: QueuedUpdate[]
  attempt: number
  deadline: number
}

/** Takes the next batch's updates off the lane's queue: at most `maxUpdates`, and at most `maxBytes` unless one update alone is larger. */
export function takeBatch(lane: Lane, maxUpdates: number, maxBytes: number): QueuedUpdate[] {
  let count = 0
  let bytes = 0
  for (const u of lane.queue) {
    if (count === maxUpdates || (count > 0 && bytes + u.bytes > maxBytes)) break
    count++
    bytes += u.bytes
  }
  const updates = lane.queue.splice(0, count)
  lane.queuedBytes -= bytes
  return updates
}

/**
 * Takes the updates of the batch's documents out of its lane's queue. Published, they would
 * wait in core for the failed ones they build on, and the resync that brings those (from the
 * clients the rooms close on the failure) carries them again in one update that core logs whole.
 */
export function takeQueuedOf(batch: Batch): QueuedUpdate[] {
  const { lane } = batch
  const docs = new Set(batch.updates.map((u) => u.docId))
  const kept: QueuedUpdate[] = []
  const taken: QueuedUpdate[] = []
  for (const u of lane.queue) (docs.has(u.docId) ? taken : kept).push(u)
  lane.queue = kept
  for (const u of taken) lane.queuedBytes -= u.bytes
  return taken
}
