import type { StateReply } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'
import type { EdgeMetrics } from './metrics.ts'

/** Looks at core's state after an open, a gap or a reconnect, while core does not answer. */
const RESYNC_ATTEMPTS = 5

/** Why the room refetches from core. */
export type ResyncReason = 'open' | 'gap' | 'reconnect' | 'http-duplicate'

export interface RoomResyncOptions {
  tenant: string
  docId: string
  log: Logger
  metrics: EdgeMetrics
  /** The later look's first wait (edge/room-options.ts resyncDelayMs). */
  resyncDelayMs: number
  /** Core's state beyond what the room holds; null when core did not answer; throws when it answered with an error. */
  fetch: () => Promise<StateReply | null>
  /** Core answered with state: the room applies it. */
  found: (reply: StateReply & { status: 'found' }) => void
  /** Core says the document is deleted. */
  deleted: () => void
}

/**
 * Pulls what core materialized that a room lacks: now (unless `firstAfterMs`) and again
 * `resyncDelayMs` later, since core commits a few ms after the ack the room may have missed; the
 * later look repeats with doubling waits while core does not answer (it may be reconnecting too).
 * One request at a time; nothing after `stop`.
 */
export class RoomResync {
  private timer: NodeJS.Timeout | undefined
  private inFlight = false
  private stopped = false

  constructor(private readonly o: RoomResyncOptions) {}

  start(reason: ResyncReason, firstAfterMs = 0): void {
    if (this.stopped) return
    this.o.metrics.roomResyncs.inc({ reason })
    if (firstAfterMs === 0) void this.fromCore()
    this.schedule(firstAfterMs || this.o.resyncDelayMs, RESYNC_ATTEMPTS)
  }

  stop(): void {
    this.stopped = true
    clearTimeout(this.timer)
  }

  private schedule(afterMs: number, attemptsLeft: number): void {
    clearTimeout(this.timer)
    this.timer = setTimeout(() => void this.later(afterMs, attemptsLeft), afterMs)
  }

  private async later(afterMs: number, attemptsLeft: number): Promise<void> {
    const answered = await this.fromCore()
    if (!answered && attemptsLeft > 1 && !this.stopped) this.schedule(afterMs * 2, attemptsLeft - 1)
  }

  /** True when core answered (with state, "missing" or "deleted"); never rejects. */
  private async fromCore(): Promise<boolean> {
    if (this.stopped || this.inFlight) return false
    this.inFlight = true
    try {
      const reply = await this.o.fetch()
      if (this.stopped) return reply !== null
      if (reply?.status === 'found') this.o.found(reply)
      if (reply?.status === 'deleted') this.o.deleted()
      return reply !== null
    } catch (err) {
      this.o.log.warn({ err, tenant: this.o.tenant, docId: this.o.docId }, 'room resync failed')
      return false
    } finally {
      this.inFlight = false
    }
  }
}
