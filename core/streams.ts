import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type JetStreamManager,
} from '@nats-io/jetstream'
import { nanos } from '@nats-io/nats-core'
import { EDIT_DEDUP_WINDOW_MS, EDIT_STREAM_MAX_AGE_MS } from '../contracts/mod.ts'

const isCode = (err: unknown, code: number) => err instanceof JetStreamApiError && err.code === code

/** Creates the edit stream when it is missing; an existing one is left as it is. */
export async function ensureEditStream(jsm: JetStreamManager, name: string, subjects: string[]): Promise<void> {
  try {
    await jsm.streams.info(name)
    return
  } catch (err) {
    if (!isCode(err, JetStreamApiCodes.StreamNotFound)) throw err
  }
  await jsm.streams.add({
    name,
    subjects,
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_age: nanos(EDIT_STREAM_MAX_AGE_MS),
    duplicate_window: nanos(EDIT_DEDUP_WINDOW_MS),
    num_replicas: 1,
  })
}

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
    if (!isCode(err, JetStreamApiCodes.ConsumerNotFound)) throw err
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
