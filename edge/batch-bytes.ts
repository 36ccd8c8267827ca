/**
 * How many bytes a batch of updates may take (edge/publisher.ts). Invariant: a stream message
 * stays within the server's max_payload: each update counts with an upper bound of its framing,
 * and the batch keeps room for its own fields and the Nats-Msg-Id header.
 */
import type { NatsConnection } from '@nats-io/transport-node'

/** Room for the Nats-Msg-Id header and its framing on top of the batch. */
const HEADERS_MARGIN_BYTES = 1024
/** Upper bound of the msgpack framing of one update in a batch (keys, lengths, ingestTs). */
export const UPDATE_FRAMING_BYTES = 64
/** Upper bound of the batch's own fields (v, tenant, partition, edgeId, array header). */
export const BATCH_FRAMING_BYTES = 512

/** The most bytes of batch the server takes (its max_payload less the headers); undefined until it said. */
export function payloadLimit(nc: NatsConnection): number | undefined {
  const maxPayload = nc.info?.max_payload
  return maxPayload === undefined ? undefined : maxPayload - HEADERS_MARGIN_BYTES
}

/** The most bytes of updates in one batch: `maxBatchBytes`, capped by what the server takes. */
export function batchBytesLimit(nc: NatsConnection, maxBatchBytes: number): number {
  const limit = payloadLimit(nc)
  return limit === undefined ? maxBatchBytes : Math.min(maxBatchBytes, limit - BATCH_FRAMING_BYTES)
}

/** nats.js refuses a payload above max_payload before sending; the server says "maximum payload exceeded". */
export function isPayloadTooLarge(err: unknown): boolean {
  const message = err instanceof Error ? err.message : ''
  return /max_payload|maximum payload/i.test(message)
}
