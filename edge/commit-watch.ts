import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import { COMMITTED_QUERY_MAX_IDS, ServiceSubjects, decodeCommittedNotice, encodeCommittedQuery, type CommittedNotice } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'
import type { EdgeMetrics } from './metrics.ts'
import { onReconnect } from './nats-reconnect.ts'

/** How long a watched message waits for core's notice, and how long a notice is remembered for a late watcher. */
const WATCH_MS = 120_000
const REMEMBER_MS = 60_000
/** A watch this old without its notice is asked for again (CommittedQuery): core commits within milliseconds. */
const DEFAULT_ASK_AFTER_MS = 5_000
/** How long the cores' answers to one CommittedQuery are gathered. */
const ASK_WAIT_MS = 1_000

/** Updates of a committed stream message (by index) that core dead-lettered instead of applying. */
export type Refused = ReadonlySet<number>
const NONE_REFUSED: Refused = new Set()

/**
 * Which of this edge's stream messages core has committed (CommittedNotice on
 * ServiceSubjects.committed(edgeId)): `watch(msgId, then)` runs `then` once core says so, with
 * the message's updates core refused. A
 * notice that comes before its watch (core was faster than our PubAck) is remembered for a
 * while. Core NATS loses a notice sent while this edge is away from NATS: a watch still waiting
 * after a reconnect, or askAfterMs after it began (then twice as long each time, one ask at a
 * time), is asked of the cores (CommittedQuery), which remember what they told
 * (core/committed-memory.ts). A watch that never hears (a core restarted
 * meanwhile) is dropped after WATCH_MS and counted — its client is never told "saved", which
 * errs on the safe side.
 */
export class CommitWatch {
  private readonly watching = new Map<string, { since: number; nextAskAt: number; askEvery: number; then: ((refused: Refused) => void)[] }>()
  private readonly committed = new Map<string, { at: number; refused: Refused }>()
  private sub: Subscription | null = null
  private sweeper: NodeJS.Timeout | undefined
  private stopReconnectWatch: () => void = () => undefined
  /** The ask in progress: one at a time, however many ids are overdue. */
  private asking: Promise<void> | null = null

  constructor(
    private readonly nc: NatsConnection,
    private readonly edgeId: string,
    private readonly metrics: EdgeMetrics,
    private readonly log: Logger,
    private readonly askAfterMs = DEFAULT_ASK_AFTER_MS,
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
    this.sweeper = setInterval(() => this.sweep(), this.askAfterMs).unref()
    // Notices sent while this edge was away from NATS are lost: ask for every one still awaited.
    this.stopReconnectWatch = onReconnect(this.nc, this.log, () => void this.ask([...this.watching.keys()]))
  }

  stop(): void {
    this.sub?.unsubscribe()
    clearInterval(this.sweeper)
    this.stopReconnectWatch()
  }

  watch(msgId: string, then: (refused: Refused) => void): void {
    const known = this.committed.get(msgId)
    if (known) return then(known.refused)
    const entry = this.watching.get(msgId)
    if (entry) entry.then.push(then)
    else this.watching.set(msgId, { since: Date.now(), nextAskAt: Date.now() + this.askAfterMs, askEvery: this.askAfterMs, then: [then] })
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
    const overdue: string[] = []
    for (const [msgId, entry] of this.watching) {
      if (now - entry.since > WATCH_MS) {
        this.watching.delete(msgId)
        this.metrics.savedUnconfirmed.inc(entry.then.length)
      } else if (now >= entry.nextAskAt && !this.asking) {
        // Each id asked after 5, 10, 20... s: while core is behind, nobody knows them yet.
        entry.askEvery *= 2
        entry.nextAskAt = now + entry.askEvery
        overdue.push(msgId)
      }
    }
    void this.ask(overdue)
  }

  /** Asks every core which of `msgIds` they told us were committed (a notice lost on core NATS); what they answer settles. */
  private async ask(msgIds: string[]): Promise<void> {
    if (msgIds.length === 0 || this.asking) return
    this.asking = this.askNow(msgIds).finally(() => (this.asking = null))
    await this.asking
  }

  private async askNow(msgIds: string[]): Promise<void> {
    for (let i = 0; i < msgIds.length; i += COMMITTED_QUERY_MAX_IDS) {
      const query = encodeCommittedQuery({ edgeId: this.edgeId, msgIds: msgIds.slice(i, i + COMMITTED_QUERY_MAX_IDS) })
      try {
        for await (const reply of await this.nc.requestMany(ServiceSubjects.committedQuery, query, { strategy: 'timer', maxWait: ASK_WAIT_MS })) {
          const notice = decodeCommittedNotice(reply.data)
          this.metrics.savedNoticesRecovered.inc(notice.msgIds.filter((id) => this.watching.has(id)).length)
          this.onNotice(notice)
        }
      } catch (err) {
        this.log.warn({ err }, 'asking core for missed committed notices failed; asked again later')
      }
    }
  }
}
