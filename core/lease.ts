import pg from 'pg'
import { LeaseLostError } from './errors.ts'

// First key of the two-int advisory lock; the partition is the second.
export const LEASE_NAMESPACE = 0x64660002

export interface LeaseTiming {
  /**
   * A lease whose session has been quiet this long is stale: its holder stops committing, and a
   * standby ends the session (lease-probe.ts). Also the lease session's statement and
   * idle-in-transaction timeouts. Default 5_000.
   */
  leaseTtlMs: number
  /** How often the holder renews its lease with a query on the lease session. Default 1_000. */
  leaseRenewMs: number
}

// SQLSTATE 25P02: current transaction is aborted, commands ignored until end of transaction block.
const IN_FAILED_TRANSACTION = '25P02'

export const DEFAULT_LEASE_TIMING: LeaseTiming = { leaseTtlMs: 5_000, leaseRenewMs: 1_000 }

/** application_name of a lease session: names the partition and the holding process. */
export const leaseSessionName = (partition: number, pid = process.pid) => `docflow-core-p${partition}-pid${pid}`

/**
 * Ownership of one partition: a session advisory lock on a dedicated PostgreSQL connection.
 *
 * Invariants:
 * - The worker commits on that same connection, so if the session dies the lock and every
 *   further commit go with it: a stale owner cannot write (fencing without epochs).
 * - The holder renews every `leaseRenewMs` (a query, so the session's `state_change` in
 *   pg_stat_activity moves); a standby may end a session quiet for longer than `leaseTtlMs`
 *   (a paused or cut-off holder), which frees the lock. The holder refuses to commit once it has
 *   not confirmed its session for `leaseTtlMs - leaseRenewMs`, so it gives up before a standby
 *   can take over, and a holder resumed after a pause finds its lease lost.
 * - PostgreSQL bounds the session on its own: statements and idle transactions time out after
 *   `leaseTtlMs`, and TCP keepalives (both ends) notice a vanished peer within seconds.
 */
export class PartitionLease {
  private lost: LeaseLostError | null = null
  private confirmedAtMs = Date.now()
  private renewal: NodeJS.Timeout | null = null
  private onLost: (err: LeaseLostError) => void = () => undefined
  /** Resolves (never rejects) with the reason once the lease is lost. */
  readonly whenLost = new Promise<LeaseLostError>((resolve) => (this.onLost = resolve))

  private constructor(
    readonly client: pg.Client,
    private readonly timing: LeaseTiming,
  ) {}

  /** Returns the lease, or null when another process holds it. */
  static async tryAcquire(databaseUrl: string, partition: number, timing: LeaseTiming = DEFAULT_LEASE_TIMING): Promise<PartitionLease | null> {
    const client = new pg.Client({
      connectionString: databaseUrl,
      application_name: leaseSessionName(partition),
      keepAlive: true,
      keepAliveInitialDelayMillis: 1_000,
      statement_timeout: timing.leaseTtlMs,
      idle_in_transaction_session_timeout: timing.leaseTtlMs,
      options: '-c tcp_keepalives_idle=2 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=3',
    })
    const lease = new PartitionLease(client, timing)
    client.on('error', (err) => lease.markLost(new LeaseLostError('partition lease session ended', { cause: err })))
    let locked = false
    try {
      await client.connect()
      const r = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [LEASE_NAMESPACE, partition])
      locked = r.rows[0]?.ok === true
    } finally {
      if (!locked) await client.end()
    }
    if (!locked) return null
    lease.confirmed()
    lease.renewal = setInterval(() => void lease.renew(), timing.leaseRenewMs)
    return lease
  }

  /** Throws LeaseLostError once the session is gone or has not been confirmed recently. */
  check(nowMs = Date.now()): void {
    const quietMs = nowMs - this.confirmedAtMs
    if (quietMs > this.timing.leaseTtlMs - this.timing.leaseRenewMs) this.markLost(new LeaseLostError(`partition lease not confirmed for ${quietMs} ms`))
    if (this.lost) throw this.lost
  }

  get isLost(): boolean {
    return this.lost !== null
  }

  /** A statement on the lease session succeeded (a commit counts as a renewal). */
  confirmed(): void {
    this.confirmedAtMs = Date.now()
  }

  async release(): Promise<void> {
    if (this.renewal) clearInterval(this.renewal)
    this.renewal = null
    // Ending the session frees the advisory lock.
    await this.client.end()
  }

  /** Never rejects: a renewal that fails or takes too long marks the lease lost. */
  private async renew(): Promise<void> {
    if (this.lost) return
    try {
      this.check()
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${this.timing.leaseTtlMs} ms`)), this.timing.leaseTtlMs)
      })
      try {
        await Promise.race([this.client.query('SELECT 1'), timeout])
      } finally {
        clearTimeout(timer)
      }
      this.confirmed()
    } catch (err) {
      // Queued inside a commit that failed before its ROLLBACK: the session answered, so it is alive.
      if (err && typeof err === 'object' && 'code' in err && err.code === IN_FAILED_TRANSACTION) return
      this.markLost(err instanceof LeaseLostError ? err : new LeaseLostError('partition lease renewal failed', { cause: err }))
    }
  }

  private markLost(err: LeaseLostError): void {
    if (this.lost) return
    this.lost = err
    if (this.renewal) clearInterval(this.renewal)
    this.renewal = null
    this.onLost(err)
  }
}
