import type { NatsConnection } from '@nats-io/nats-core'
import type pg from 'pg'
import type * as Y from 'yjs'
import { CLEAN_STREAM, DLQ_STREAM, ServiceUser, serviceInboxPrefix } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'
import type { BatchFeeds } from './batch.ts'
import { cleanMessages } from './clean-events.ts'
import { deadLetterMessage } from './dead-letter-feed.ts'
import { FeedPublisher } from './feed-publisher.ts'
import { SequenceGapWatch, type GapWatchOptions } from './gap-watch.ts'
import type { CoreMetrics } from './metrics.ts'
import { openGapReports, recordDeadLetter, resolveDeadLetter } from './store.ts'

/**
 * What core tells the world after each commit, besides the committed notice: every dead letter
 * on the dead-letter stream, one cleaned event per applied update on the CLEAN stream, and the
 * sequence-gap reports (gap-watch.ts). Everything here runs after the PostgreSQL commit and
 * never holds a partition back (feed-publisher.ts says what a failed publish costs).
 */
export class QualityFeeds {
  private readonly deadLetters: FeedPublisher
  private readonly clean: FeedPublisher
  private readonly gaps: SequenceGapWatch

  constructor(nc: NatsConnection, pool: pg.Pool, docOf: (tenant: string, docId: string) => Y.Doc | undefined, options: GapWatchOptions, log: Logger, metrics: CoreMetrics) {
    // Core's connection has the core user's inbox prefix (core/main.ts); acks come back there.
    this.deadLetters = new FeedPublisher(DLQ_STREAM, nc, serviceInboxPrefix(ServiceUser.Core), log, metrics)
    this.clean = new FeedPublisher(CLEAN_STREAM, nc, serviceInboxPrefix(ServiceUser.Core), log, metrics)
    this.gaps = new SequenceGapWatch(
      options,
      {
        docOf,
        report: async (row) => {
          await recordDeadLetter(pool, row)
          this.deadLetters.offer([deadLetterMessage(row)])
        },
        resolve: (row) => resolveDeadLetter(pool, row),
        openReports: (tenant, docId) => openGapReports(pool, tenant, docId),
      },
      log,
      metrics,
    )
  }

  start(): void {
    this.gaps.start()
  }

  /** A committed batch's feeds (worker.ts onFeeds). */
  take(feeds: BatchFeeds): void {
    if (feeds.deadLetters.length > 0) {
      const at = Date.now()
      this.deadLetters.offer(feeds.deadLetters.map((row) => deadLetterMessage(row, at)))
    }
    if (feeds.cleanEvents.length > 0) this.clean.offer(cleanMessages(feeds.cleanEvents))
    if (feeds.pending.length > 0 || feeds.settled.length > 0) this.gaps.observe(feeds.pending, feeds.settled)
  }

  /** After the workers stopped: publishes what is queued. */
  async stop(): Promise<void> {
    this.gaps.stop()
    await Promise.all([this.deadLetters.flush(), this.clean.flush()])
  }
}
