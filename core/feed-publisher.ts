import type { JetStreamClient } from '@nats-io/jetstream'
import type { Logger } from '../runtime/log.ts'
import type { CoreMetrics } from './metrics.ts'

/** One message of a feed stream (DLQ, CLEAN). */
export interface FeedMessage {
  subject: string
  data: Uint8Array
  /** Derived from the source update, so a second publish of it is dropped by JetStream's dedup window. */
  msgId: string
}

export interface FeedPublisherOptions {
  /** Messages waiting to be published at most; past it the oldest are dropped (counted, logged). Default 100_000. */
  maxQueued: number
  /** Publishes in flight at once. Default 256. */
  maxInFlight: number
  /** Attempts per message before it is given up (counted, logged). Default 5. */
  attempts: number
  /** Wait after a failed round before retrying. Default 500. */
  retryDelayMs: number
}

export const FEED_PUBLISHER_DEFAULTS: FeedPublisherOptions = { maxQueued: 100_000, maxInFlight: 256, attempts: 5, retryDelayMs: 500 }

/**
 * Publishes a feed stream's messages after core's PostgreSQL commit, in the background: a commit
 * never waits for it, so a slow or unreachable JetStream never blocks a partition. The tables
 * (dead_letters, op_log) are the record, the stream the feed; what the feed misses stays there.
 *
 * A failed publish is retried (attempts, retryDelayMs) with the same message id, so a publish
 * that landed but whose ack was lost is stored once. A message given up, or dropped because the
 * queue is full (JetStream down for long), counts in `feed_publish_failures_total{stream,
 * cause}` and is logged with its id; so does a crash between the commit and the publish (the
 * queue is in memory): sinks that need every event reconcile a range of source sequences
 * against the op log / dead_letters (both keyed by source stream sequence and item).
 */
export class FeedPublisher {
  private readonly queue: (FeedMessage & { attempt: number })[] = []
  private pumping: Promise<void> | null = null
  private stopped = false

  constructor(
    private readonly stream: string,
    private readonly js: JetStreamClient,
    private readonly log: Logger,
    private readonly metrics: CoreMetrics,
    private readonly options: FeedPublisherOptions = FEED_PUBLISHER_DEFAULTS,
  ) {}

  offer(messages: FeedMessage[]): void {
    if (messages.length === 0) return
    for (const m of messages) this.queue.push({ ...m, attempt: 0 })
    const over = this.queue.length - this.options.maxQueued
    if (over > 0) {
      const dropped = this.queue.splice(0, over)
      this.metrics.feedPublishFailures.inc({ stream: this.stream, cause: 'queue-full' }, over)
      this.log.error({ stream: this.stream, dropped: over, firstMsgId: dropped[0]!.msgId }, 'feed queue full: oldest messages dropped (the tables keep them)')
    }
    this.pumping ??= this.pump().finally(() => {
      this.pumping = null
    })
  }

  /** Publishes what is queued (one more round of retries at most), then stops taking messages. */
  async flush(): Promise<void> {
    this.stopped = true
    await this.pumping
  }

  private async pump(): Promise<void> {
    while (this.queue.length > 0) {
      const round = this.queue.splice(0, this.options.maxInFlight)
      const results = await Promise.allSettled(round.map((m) => this.js.publish(m.subject, m.data, { msgID: m.msgId, expect: { streamName: this.stream } })))
      const failed: typeof round = []
      results.forEach((r, i) => {
        if (r.status === 'fulfilled') return
        const m = round[i]!
        m.attempt += 1
        if (m.attempt < this.options.attempts && !this.stopped) failed.push(m)
        else {
          this.metrics.feedPublishFailures.inc({ stream: this.stream, cause: 'gave-up' })
          this.log.error({ err: r.reason, stream: this.stream, msgId: m.msgId, attempts: m.attempt }, 'feed message not published (the tables keep it)')
        }
      })
      if (failed.length > 0) {
        this.log.warn({ stream: this.stream, failed: failed.length, err: (results.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason }, 'feed publish failed; retrying')
        this.queue.unshift(...failed)
        await new Promise((r) => setTimeout(r, this.options.retryDelayMs))
      }
    }
  }
}
