import pg from 'pg'
import type { Logger } from '../runtime/log.ts'
import type { CoreView } from './balance.ts'
import { LEASE_NAMESPACE, LEASE_SESSION_PREFIX, type LeaseTiming } from './lease.ts'
import type { CoreMetrics } from './metrics.ts'

export interface LeaseProbeOptions extends LeaseTiming {
  databaseUrl: string
  /** How often the leases and the live cores are looked at. Default 2_000. */
  leaseRetryMs: number
  /** This core's lease session backend (opened again when it was lost). */
  ownSession: () => Promise<number>
  /** After each look: the live cores (balance.ts), before any waiter is woken. */
  onView: (view: CoreView) => void
}

interface Holder {
  partition: number
  pid: number
  state: string | null
  quietMs: number | null
}

/**
 * Looks at the leases and the live cores every `leaseRetryMs`, on one shared connection (not one
 * new connection per partition per retry): the live cores — lease sessions that renewed within
 * the lease TTL — go to the balance first; then a partition whose lock nobody holds wakes its workers,
 * which then try to take it on their own lease session; a holder whose session has been idle
 * longer than the lease TTL — it stopped renewing: paused, cut off or hung — has its session
 * ended with pg_terminate_backend, which frees the lock (lease.ts states the holder's side).
 * One probe per core process, shared by its partition workers.
 */
export class LeaseProbe {
  private readonly waiters = new Map<number, Set<() => void>>()
  private client: pg.Client | null = null
  private timer: NodeJS.Timeout | null = null
  private closed = false
  /** When each partition this core waits for was first seen free, while it stays free. */
  private readonly freeSince = new Map<number, number>()
  /** Sessions this probe already ended that may still show as holders while they exit. */
  private readonly ended = new Set<number>()

  constructor(
    private readonly o: LeaseProbeOptions,
    private readonly log: Logger,
    private readonly metrics: CoreMetrics,
  ) {}

  /** Starts looking, at once and then every leaseRetryMs. */
  start(): void {
    this.schedule(0)
  }

  /** Closes the probe's connection and wakes anyone still waiting (after the workers stopped). */
  async close(): Promise<void> {
    this.closed = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    for (const wake of [...this.waiters.values()].flatMap((s) => [...s])) wake()
    this.waiters.clear()
    const client = this.client
    this.client = null
    await client?.end()
  }

  /** How long `partition` has been seen free without a break (0: held at the last look). */
  freeForMs(partition: number): number {
    const since = this.freeSince.get(partition)
    return since === undefined ? 0 : Date.now() - since
  }

  /** Resolves when nobody holds `partition`'s lease (or `signal` aborts). */
  untilFree(partition: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const set = this.waiters.get(partition) ?? new Set()
      this.waiters.set(partition, set)
      const wake = () => {
        set.delete(wake)
        if (set.size === 0 && this.waiters.get(partition) === set) this.waiters.delete(partition)
        signal.removeEventListener('abort', wake)
        resolve()
      }
      set.add(wake)
      signal.addEventListener('abort', wake)
    })
  }

  private schedule(ms: number): void {
    if (this.closed) return
    this.timer = setTimeout(() => void this.tick(), ms)
  }

  /** Never rejects: a failed look is logged, counted and retried at the next interval. */
  private async tick(): Promise<void> {
    this.timer = null
    try {
      const holders = await this.holders()
      const holderPids = new Set([...holders.values()].map((h) => h.pid))
      for (const pid of this.ended) if (!holderPids.has(pid)) this.ended.delete(pid)
      const [members, own] = await Promise.all([this.liveCores(), this.o.ownSession()])
      this.o.onView({ members: members.filter((pid) => !this.ended.has(pid)), own })
      const now = Date.now()
      for (const partition of this.freeSince.keys()) if (holders.has(partition)) this.freeSince.delete(partition)
      for (const [partition, wakes] of this.waiters) {
        const holder = holders.get(partition)
        if (!holder) {
          if (!this.freeSince.has(partition)) this.freeSince.set(partition, now)
          for (const wake of [...wakes]) wake()
          continue
        }
        if (holder.state === 'idle' && holder.quietMs !== null && holder.quietMs > this.o.leaseTtlMs && !this.ended.has(holder.pid)) await this.endStaleSession(holder)
      }
    } catch (err) {
      this.metrics.leaseProbeErrors.inc()
      this.log.warn({ err }, 'lease probe failed; retrying')
      const client = this.client
      this.client = null
      await client?.end().catch((endErr: unknown) => this.log.debug({ err: endErr }, 'lease probe connection already closed'))
    }
    this.schedule(this.o.leaseRetryMs)
  }

  /** Lease holders by partition, with how long each session has been in its state. */
  private async holders(): Promise<Map<number, Holder>> {
    const client = await this.connection()
    const r = await client.query<{ partition: number; pid: number; state: string | null; quiet_ms: number | null }>(
      `SELECT l.objid::int AS partition, l.pid, a.state,
              (extract(epoch FROM clock_timestamp() - a.state_change) * 1000)::float8 AS quiet_ms
       FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
       WHERE l.locktype = 'advisory' AND l.classid = $1::bigint::oid AND l.objsubid = 2 AND l.granted
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
      [LEASE_NAMESPACE],
    )
    return new Map(r.rows.map((row) => [row.partition, { partition: row.partition, pid: row.pid, state: row.state, quietMs: row.quiet_ms }]))
  }

  /** Backends of the lease sessions of live cores (this one too): any not idle, or idle for less than the lease TTL. */
  private async liveCores(): Promise<number[]> {
    const client = await this.connection()
    const r = await client.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity
       WHERE datname = current_database() AND starts_with(application_name, $1)
         AND (state IS DISTINCT FROM 'idle' OR clock_timestamp() - state_change < $2 * interval '1 millisecond')
       ORDER BY pid`,
      [LEASE_SESSION_PREFIX, this.o.leaseTtlMs],
    )
    return r.rows.map((row) => row.pid)
  }

  private async endStaleSession(holder: Holder): Promise<void> {
    const client = await this.connection()
    const r = await client.query<{ ended: boolean }>('SELECT pg_terminate_backend($1) AS ended', [holder.pid])
    this.ended.add(holder.pid)
    this.metrics.leaseTakeovers.inc()
    this.log.warn({ partition: holder.partition, pid: holder.pid, quietMs: Math.round(holder.quietMs ?? 0), ended: r.rows[0]?.ended }, 'ended a stale lease session (holder stopped renewing)')
  }

  private async connection(): Promise<pg.Client> {
    if (this.client) return this.client
    const client = new pg.Client({ connectionString: this.o.databaseUrl, application_name: `docflow-core-probe-pid${process.pid}`, keepAlive: true, statement_timeout: this.o.leaseTtlMs })
    client.on('error', (err) => {
      this.log.warn({ err }, 'lease probe connection failed')
      if (this.client === client) this.client = null
    })
    await client.connect()
    if (this.closed) {
      await client.end()
      throw new Error('lease probe closed while connecting')
    }
    this.client = client
    return client
  }
}
