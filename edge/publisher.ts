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

/** Publishes client updates to the tenant's edit subject and waits for the stream's ack. */
export class UpdatePublisher {
  private readonly js: JetStreamClient

  constructor(
    nc: NatsConnection,
    private readonly edgeId: string,
    private readonly metrics: EdgeMetrics,
    private readonly opts: PublisherOptions,
  ) {
    this.js = jetstream(nc)
  }

  async publish(tenant: string, docId: string, userId: string, update: Uint8Array, ingestTs = Date.now()): Promise<void> {
    const envelope: EditEnvelope = { v: 1, tenant, docId, userId, update, ingestTs, edgeId: this.edgeId }
    try {
      const ack = await this.js.publish(editIngestSubject(tenant, docId), encodeEnvelope(envelope), {
        msgID: editMsgId(tenant, docId, update),
        timeout: this.opts.ackTimeoutMs,
        retries: this.opts.attempts,
      })
      if (ack.duplicate) this.metrics.updatesDuplicate.inc()
      else this.metrics.updatesPublished.inc()
      this.metrics.publishSeconds.observe((Date.now() - ingestTs) / 1000)
    } catch (err) {
      const quota = isJetStreamApiError(err, JS_ACCOUNT_RESOURCES_EXCEEDED)
      if (quota) this.metrics.quotaRejections.inc({ tenant })
      else this.metrics.publishFailures.inc()
      throw new PublishError(`update for ${tenant}/${docId} not stored: ${(err as Error).message}`, quota ? 'quota' : 'unavailable', { cause: err })
    }
  }
}
