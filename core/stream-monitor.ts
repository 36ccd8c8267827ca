import type { JetStreamManager } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import { streamMessageGetSubject } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'
import type { CoreMetrics } from './metrics.ts'
import type { PartitionWorker } from './worker.ts'

/**
 * Publishes how far each owned partition lags — uncommitted messages and the age of the
 * oldest one — which is what alerts watch: AGG is sized to hold everything its sources hold
 * (provisioner.ts), so its fill level says nothing about loss; lag does. AGG's usage ratio is
 * still exported for capacity dashboards.
 */
export class StreamMonitor {
  private timer: NodeJS.Timeout | null = null
  private ageUnsupportedLogged = false

  constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly stream: string,
    private readonly workers: readonly PartitionWorker[],
    private readonly intervalMs: number,
    private readonly log: Logger,
    private readonly metrics: CoreMetrics,
  ) {}

  start(): void {
    const tick = () => {
      void this.sample().finally(() => {
        if (this.timer) this.timer = setTimeout(tick, this.intervalMs)
      })
    }
    this.timer = setTimeout(tick, 0)
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
  }

  async sample(): Promise<void> {
    try {
      const info = await this.jsm.streams.info(this.stream)
      const cap = info.config.max_bytes
      this.metrics.aggUsageRatio.set(cap > 0 ? info.state.bytes / cap : 0)
      for (const w of this.workers) {
        if (!w.owned) {
          this.metrics.consumerPending.remove({ partition: w.partition })
          this.metrics.consumerOldestPendingSeconds.remove({ partition: w.partition })
          continue
        }
        const c = await this.jsm.consumers.info(this.stream, w.durable)
        const pending = c.num_pending + c.num_ack_pending
        this.metrics.consumerPending.set({ partition: w.partition }, pending)
        const oldest = pending > 0 ? await this.oldestUncommitted(c.config.filter_subject ?? '>', c.ack_floor.stream_seq + 1) : null
        this.metrics.consumerOldestPendingSeconds.set({ partition: w.partition }, oldest ? Math.max(0, (Date.now() - oldest.getTime()) / 1000) : 0)
      }
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'stream monitor sample failed')
    }
  }

  /**
   * Store time of the partition's first message at or after `fromSeq` (the consumer's ack
   * floor + 1: everything below is committed). The JetStream message-get API's `next_by_subj`
   * finds it without reading the messages of other partitions in between.
   */
  private async oldestUncommitted(filter: string, fromSeq: number): Promise<Date | null> {
    const reply = await this.nc.request(streamMessageGetSubject(this.stream), JSON.stringify({ seq: fromSeq, next_by_subj: filter }), { timeout: 2_000 })
    const body = JSON.parse(new TextDecoder().decode(reply.data)) as { message?: { time: string }; error?: { code: number; description: string } }
    if (body.message) return new Date(body.message.time)
    if (body.error && body.error.code !== 404 && !this.ageUnsupportedLogged) {
      this.ageUnsupportedLogged = true
      this.log.warn({ stream: this.stream, error: body.error }, 'cannot look up the oldest uncommitted message; its age gauge stays 0')
    }
    return null
  }
}
