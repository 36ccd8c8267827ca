import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import { ServiceSubjects, decodeCommittedNotice, type CommittedNotice } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'
import type { EdgeMetrics } from './metrics.ts'

/** How long a watched message waits for core's notice, and how long a notice is remembered for a late watcher. */
const WATCH_MS = 120_000
const REMEMBER_MS = 60_000
const SWEEP_MS = 10_000

/** Updates of a committed stream message (by index) that core dead-lettered instead of applying. */
export type Refused = ReadonlySet<number>
const NONE_REFUSED: Refused = new Set()

/**
 * Which of this edge's stream messages core has committed (CommittedNotice on
 * ServiceSubjects.committed(edgeId)): `watch(msgId, then)` runs `then` once core says so, with
 * the message's updates core refused. A
 * notice that comes before its watch (core was faster than our PubAck) is remembered for a
 * while; a watch that never hears (a lost notice) is dropped after WATCH_MS and counted — its
 * client is never told "saved", which errs on the safe side.
 */
export class CommitWatch {
  private readonly watching = new Map<string, { since: number; then: ((refused: Refused) => void)[] }>()
  private readonly committed = new Map<string, { at: number; refused: Refused }>()
  private sub: Subscription | null = null
  private sweeper: NodeJS.Timeout | undefined

  constructor(
    private readonly nc: NatsConnection,
    private readonly edgeId: string,
    private readonly metrics: EdgeMetrics,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.sub = this.nc.subscribe(ServiceSubjects.committed(this.edgeId), {
      callback: (err, msg) => {
        if (err) return this.log.warn({ err }, 'committed notice subscription')
        try {
          this.onNotice(decodeCommittedNotice(msg.data))
        } catch (e) {
          this.log.warn({ err: e }, 'bad committed notice dropped')
        }
      },
    })
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS).unref()
  }

  stop(): void {
    this.sub?.unsubscribe()
    clearInterval(this.sweeper)
  }

  watch(msgId: string, then: (refused: Refused) => void): void {
    const known = this.committed.get(msgId)
    if (known) return then(known.refused)
    const entry = this.watching.get(msgId)
    if (entry) entry.then.push(then)
    else this.watching.set(msgId, { since: Date.now(), then: [then] })
  }

  private onNotice({ msgIds, refused }: CommittedNotice): void {
    const now = Date.now()
    const refusedOf = new Map(refused.map((r) => [r.msgId, new Set(r.items)]))
    for (const msgId of msgIds) {
      const known = { at: now, refused: refusedOf.get(msgId) ?? NONE_REFUSED }
      this.committed.set(msgId, known)
      const entry = this.watching.get(msgId)
      if (!entry) continue
      this.watching.delete(msgId)
      for (const then of entry.then) then(known.refused)
    }
  }

  private sweep(): void {
    const now = Date.now()
    for (const [msgId, { at }] of this.committed) if (now - at > REMEMBER_MS) this.committed.delete(msgId)
    for (const [msgId, entry] of this.watching) {
      if (now - entry.since <= WATCH_MS) continue
      this.watching.delete(msgId)
      this.metrics.savedUnconfirmed.inc(entry.then.length)
    }
  }
}
