import { AckPolicy, DeliverPolicy, JetStreamApiCodes, type JetStreamManager } from '@nats-io/jetstream'
import { nanos } from '@nats-io/nats-core'
import { consumerInfo, isJetStreamApiError, streamInfo } from '../runtime/nats.ts'
import { StreamHoleError } from './errors.ts'

export interface PartitionConsumer {
  stream: string
  durable: string
  filter: string
  /** Redelivery delay for unacked messages. */
  ackWaitMs: number
  /** Messages in flight to the worker. */
  maxAckPending: number
  /** Told the outcome of every hole check (null: no hole), so core can count and flag it. */
  onHoleCheck?: (hole: StreamHole | null) => void
}

/** Stream sequences a consumer would start inside of, that the stream no longer holds. */
export interface StreamHole {
  stream: string
  durable: string
  /** First missing sequence (the consumer's start). */
  fromSeq: number
  /** Last missing sequence (the stream's first sequence - 1). */
  toSeq: number
}

/**
 * Recreates a partition's durable consumer so it delivers from `startSeq`: the committed
 * checkpoint in PostgreSQL is the truth, the consumer only a cursor (also how replay works).
 *
 * Never past a hole: when the stream no longer holds `startSeq` (AGG discarded or expired
 * messages core had not committed), nats-server would silently start at its first sequence.
 * Unless findHole proves the missing sequences held nothing of this partition that is not
 * committed, this throws StreamHoleError and leaves the old consumer (and its evidence) alone.
 */
export async function resetConsumer(jsm: JetStreamManager, c: PartitionConsumer, startSeq: number): Promise<void> {
  const hole = await findHole(jsm, c, startSeq)
  c.onHoleCheck?.(hole)
  if (hole) throw new StreamHoleError(hole)
  try {
    await jsm.consumers.delete(c.stream, c.durable)
  } catch (err) {
    if (!isJetStreamApiError(err, JetStreamApiCodes.ConsumerNotFound)) throw err
  }
  await jsm.consumers.add(c.stream, {
    durable_name: c.durable,
    filter_subject: c.filter,
    // Acked once per batch (worker.ts): an ack covers every earlier delivery.
    ack_policy: AckPolicy.All,
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: Math.max(1, startSeq),
    ack_wait: nanos(c.ackWaitMs),
    max_ack_pending: c.maxAckPending,
    max_deliver: -1,
  })
}

/**
 * The sequences from `startSeq` up to the stream's first one, when the stream lost them and
 * they may have held uncommitted messages of this partition; null when nothing is missing.
 *
 * Proof that missing sequences are not this partition's (AGG interleaves all partitions, so a
 * gap before the first sequence is normal once old, consumed messages expire): the previous
 * consumer of the partition had looked at every sequence up to the gap's end
 * (`delivered.stream_seq`: a filtered consumer moves past other partitions' messages) and
 * has nothing unacked. Core acks only after the PostgreSQL commit, so whatever of this
 * partition lay in the gap is committed. Without that consumer (deleted, never caught up)
 * there is no proof, and a hole is reported.
 */
export async function findHole(jsm: JetStreamManager, c: PartitionConsumer, startSeq: number): Promise<StreamHole | null> {
  const info = await streamInfo(jsm, c.stream)
  if (!info) return null // no stream: consumers.add fails with the real reason
  const first = info.state.messages > 0 ? info.state.first_seq : info.state.last_seq + 1
  if (first <= startSeq) return null
  const previous = await consumerInfo(jsm, c.stream, c.durable)
  if (previous && previous.num_ack_pending === 0 && previous.delivered.stream_seq >= first - 1) return null
  return { stream: c.stream, durable: c.durable, fromSeq: startSeq, toSeq: first - 1 }
}

/** Resolves once `stream` exists; logs while it waits (provisioning creates it). */
export async function waitForStream(jsm: JetStreamManager, stream: string, onWait: () => void, everyMs = 1_000): Promise<void> {
  while (!(await streamInfo(jsm, stream))) {
    onWait()
    await new Promise((r) => setTimeout(r, everyMs))
  }
}
