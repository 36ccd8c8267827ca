import { jetstream, type JetStreamClient } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import { JS_ACCOUNT_RESOURCES_EXCEEDED, editIngestSubject, editMsgId, encodeEnvelope, type EditEnvelope } from '../contracts/mod.ts'
import { isJetStreamApiError } from '../runtime/nats.ts'
import type { EdgeMetrics } from './metrics.ts'
import { PublishError } from './errors.ts'

export interface PublisherOptions {
  /** Per-attempt JetStream ack timeout. Default 2_000. */
  ackTimeoutMs: number
  /** Attempts on timeout / no responders before giving up; the msg id makes retries safe. Default 5. */
  attempts: number
}

/** Room for the Nats-Msg-Id header and its framing on top of the envelope. */
const HEADERS_MARGIN_BYTES = 1024

/** nats.js refuses a payload above max_payload before sending; the server says "maximum payload exceeded". */
function isPayloadTooLarge(err: unknown): boolean {
  const message = err instanceof Error ? err.message : ''
  return /max_payload|maximum payload/i.test(message)
}

/** Publishes client updates to the tenant's edit subject and waits for the stream's ack. */
export class UpdatePublisher {
  private readonly js: JetStreamClient

  constructor(
    private readonly nc: NatsConnection,
    private readonly edgeId: string,
    private readonly metrics: EdgeMetrics,
    private readonly opts: PublisherOptions,
  ) {
    this.js = jetstream(nc)
  }

  async publish(tenant: string, docId: string, userId: string, update: Uint8Array, ingestTs = Date.now()): Promise<void> {
    const envelope: EditEnvelope = { v: 1, tenant, docId, userId, update, ingestTs, edgeId: this.edgeId }
    const payload = encodeEnvelope(envelope)
    // The edge's frame limit keeps this from happening; a server with a smaller max_payload
    // (after a reconnect) must still cost only the writer, never the room.
    const maxPayload = this.nc.info?.max_payload
    if (maxPayload !== undefined && payload.byteLength + HEADERS_MARGIN_BYTES > maxPayload) {
      this.metrics.tooBigRejections.inc({ tenant })
      throw new PublishError(`update for ${tenant}/${docId} is ${payload.byteLength} bytes; the server takes at most ${maxPayload}`, 'too-big')
    }
    try {
      const ack = await this.js.publish(editIngestSubject(tenant, docId), payload, {
        msgID: editMsgId(tenant, docId, update),
        timeout: this.opts.ackTimeoutMs,
        retries: this.opts.attempts,
      })
      if (ack.duplicate) this.metrics.updatesDuplicate.inc()
      else this.metrics.updatesPublished.inc()
      this.metrics.publishSeconds.observe((Date.now() - ingestTs) / 1000)
    } catch (err) {
      const kind = isJetStreamApiError(err, JS_ACCOUNT_RESOURCES_EXCEEDED) ? 'quota' : isPayloadTooLarge(err) ? 'too-big' : 'unavailable'
      if (kind === 'quota') this.metrics.quotaRejections.inc({ tenant })
      else if (kind === 'too-big') this.metrics.tooBigRejections.inc({ tenant })
      else this.metrics.publishFailures.inc()
      throw new PublishError(`update for ${tenant}/${docId} not stored: ${(err as Error).message}`, kind, { cause: err })
    }
  }
}
