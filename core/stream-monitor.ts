import type { JetStreamManager } from '@nats-io/jetstream'
import type { Logger } from '../runtime/log.ts'
import type { CoreMetrics } from './metrics.ts'
import type { PartitionWorker } from './worker.ts'

/** Share of AGG's byte cap above which we warn: past the cap AGG discards its oldest messages. */
export const AGG_USAGE_WARN_RATIO = 0.8

/**
 * Publishes how full the aggregate stream is and how far each owned partition lags, so the
 * guard against NATS-TENANCY pitfall 1 (AGG capped below the service quota) can alert.
 */
export class StreamMonitor {
  private timer: NodeJS.Timeout | null = null
  private warned = false

  constructor(
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
      const ratio = cap > 0 ? info.state.bytes / cap : 0
      this.metrics.aggUsageRatio.set(ratio)
      if (ratio >= AGG_USAGE_WARN_RATIO && !this.warned) this.log.warn({ stream: this.stream, bytes: info.state.bytes, maxBytes: cap }, 'aggregate stream nearly full: it discards its oldest messages past its cap')
      this.warned = ratio >= AGG_USAGE_WARN_RATIO
      for (const w of this.workers) {
        if (!w.owned) {
          this.metrics.consumerPending.remove({ partition: w.partition })
          continue
        }
        const c = await this.jsm.consumers.info(this.stream, w.durable)
        this.metrics.consumerPending.set({ partition: w.partition }, c.num_pending + c.num_ack_pending)
      }
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'stream monitor sample failed')
    }
  }
}
