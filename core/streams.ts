import { AckPolicy, DeliverPolicy, JetStreamApiCodes, type JetStreamManager } from '@nats-io/jetstream'
import { nanos } from '@nats-io/nats-core'
import { isJetStreamApiError, streamInfo } from '../runtime/nats.ts'

export interface PartitionConsumer {
  stream: string
  durable: string
  filter: string
  /** Redelivery delay for unacked messages. */
  ackWaitMs: number
  /** Messages in flight to the worker. */
  maxAckPending: number
}

/**
 * Recreates a partition's durable consumer so it delivers from `startSeq`: the committed
 * checkpoint in PostgreSQL is the truth, the consumer only a cursor (also how replay works).
 */
export async function resetConsumer(jsm: JetStreamManager, c: PartitionConsumer, startSeq: number): Promise<void> {
  try {
    await jsm.consumers.delete(c.stream, c.durable)
  } catch (err) {
    if (!isJetStreamApiError(err, JetStreamApiCodes.ConsumerNotFound)) throw err
  }
  await jsm.consumers.add(c.stream, {
    durable_name: c.durable,
    filter_subject: c.filter,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: Math.max(1, startSeq),
    ack_wait: nanos(c.ackWaitMs),
    max_ack_pending: c.maxAckPending,
    max_deliver: -1,
  })
}

/** Resolves once `stream` exists; logs while it waits (provisioning creates it). */
export async function waitForStream(jsm: JetStreamManager, stream: string, onWait: () => void, everyMs = 1_000): Promise<void> {
  while (!(await streamInfo(jsm, stream))) {
    onWait()
    await new Promise((r) => setTimeout(r, everyMs))
  }
}
