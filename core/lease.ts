import pg from 'pg'
import { LeaseLostError, isRefusedStatement } from './errors.ts'
import { commitBatches, type Batch, type Committed } from './store.ts'

// First key of the two-int advisory lock; the partition is the second.
export const LEASE_NAMESPACE = 0x64660002

export interface LeaseTiming {
  /**
   * A lease whose session has been quiet this long is stale: its holder stops committing, and a
   * standby ends the session (lease-probe.ts). Also the lease session's statement and
   * idle-in-transaction timeouts. Default 5_000.
   */
  leaseTtlMs: number
  /** How often the holder renews its leases with a query on the lease session. Default 1_000. */
  leaseRenewMs: number
}

/** Group commits start at most this often (batches wait for the next): fewer, fuller transactions and socket writes. */
export const GROUP_COMMIT_INTERVAL_MS = 10

/** Op-log rows one group commit writes at most (about 0.3 s of PostgreSQL work measured here). */
const MAX_GROUP_OPS = 10_000

export const DEFAULT_LEASE_TIMING: LeaseTiming = { leaseTtlMs: 5_000, leaseRenewMs: 1_000 }

/** application_name of a core process's lease session: this prefix, then `pid<os pid>`. */
export const LEASE_SESSION_PREFIX = 'docflow-core-leases-'
const leaseSessionName = (pid = process.pid) => `${LEASE_SESSION_PREFIX}pid${pid}`

/**
 * The one PostgreSQL session of a core process that holds its partition leases (a session
 * advisory lock per partition) and commits every partition's batches.
 *
 * Invariants:
 * - Commits go over this same session, so if it dies the locks and every further commit go
 *   with it: a stale owner cannot write (fencing without epochs).
 * - Batches of all partitions that wait while a commit is in flight are committed together in
 *   one statement (group commit: store.ts commitBatches), so the number of transactions follows
 *   the commit latency, not the number of partitions or messages. A group whose statement
 *   PostgreSQL refuses for its contents, size or time is committed again batch by batch, so one
 *   partition's refused batch fails no other.
 * - The holder renews every `leaseRenewMs` (a query, so the session's `state_change` in
 *   pg_stat_activity moves); a standby may end a session quiet for longer than `leaseTtlMs`
 *   (a paused or cut-off holder), which frees the locks. The holder refuses to commit once it has
 *   not confirmed its session for `leaseTtlMs - leaseRenewMs`, so it gives up before a standby
 *   can take over, and a holder resumed after a pause finds its leases lost.
 * - PostgreSQL bounds the session on its own: statements and idle transactions time out after
 *   `leaseTtlMs`, and TCP keepalives (both ends) notice a vanished peer within seconds.
 */
export class LeaseSession {
  private lost: LeaseLostError | null = null
  private confirmedAtMs = Date.now()
  private renewal: NodeJS.Timeout | null = null
  private onLost: (err: LeaseLostError) => void = () => undefined
  /** Resolves (never rejects) with the reason once the session is lost. */
  readonly whenLost = new Promise<LeaseLostError>((resolve) => (this.onLost = resolve))
  private waiting: { batch: Batch; resolve: (committed: Committed) => void; reject: (err: unknown) => void }[] = []
  private committing = false
  private nextCommit: NodeJS.Timeout | null = null
  private lastCommitAtMs = 0
  /** The PostgreSQL backend of this session: how other cores tell it apart (balance.ts). */
  backendPid = 0
  /** The end of the last statement queued on the session (serial). */
  private statements: Promise<unknown> = Promise.resolve()

  private constructor(
    private readonly client: pg.Client,
    private readonly timing: LeaseTiming,
  ) {}

  static async open(databaseUrl: string, timing: LeaseTiming): Promise<LeaseSession> {
    const client = new pg.Client({
      connectionString: databaseUrl,
      application_name: leaseSessionName(),
      keepAlive: true,
      keepAliveInitialDelayMillis: 1_000,
      statement_timeout: timing.leaseTtlMs,
      idle_in_transaction_session_timeout: timing.leaseTtlMs,
      options: '-c tcp_keepalives_idle=2 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=3',
    })
    const session = new LeaseSession(client, timing)
    client.on('error', (err) => session.markLost(new LeaseLostError('lease session ended', { cause: err })))
    try {
      await client.connect()
      session.backendPid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid
    } catch (err) {
      await client.end().catch(() => undefined) // nothing to close beyond the failed socket
      throw err
    }
    session.confirmed()
    session.renewal = setInterval(() => void session.renew(), timing.leaseRenewMs)
    return session
  }

  /** Locks `partition` on this session; false when another session holds it. */
  async tryLock(partition: number): Promise<boolean> {
    this.check()
    const r = await this.serial(() => this.client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [LEASE_NAMESPACE, partition]))
    this.confirmed()
    return r.rows[0]?.ok === true
  }

  /** Gives `partition` up; nothing to do once the session is lost (the lock went with it). */
  async unlock(partition: number): Promise<void> {
    if (this.lost) return
    await this.serial(() => this.client.query('SELECT pg_advisory_unlock($1, $2)', [LEASE_NAMESPACE, partition]))
  }

  /**
   * Commits `batch` together with whatever other partitions hand in meanwhile: at the next group
   * commit, which starts GROUP_COMMIT_INTERVAL_MS after the previous one started (or when it ends).
   */
  commit(batch: Batch): Promise<Committed> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ batch, resolve, reject })
      this.scheduleCommit()
    })
  }

  private scheduleCommit(): void {
    if (this.committing || this.nextCommit) return
    const waitMs = Math.max(0, this.lastCommitAtMs + GROUP_COMMIT_INTERVAL_MS - Date.now())
    this.nextCommit = setTimeout(() => {
      this.nextCommit = null
      void this.commitWaiting()
    }, waitMs)
  }

  /** Throws LeaseLostError once the session is gone or has not been confirmed recently. */
  check(nowMs = Date.now()): void {
    const quietMs = nowMs - this.confirmedAtMs
    if (quietMs > this.timing.leaseTtlMs - this.timing.leaseRenewMs) this.markLost(new LeaseLostError(`lease session not confirmed for ${quietMs} ms`))
    if (this.lost) throw this.lost
  }

  get isLost(): boolean {
    return this.lost !== null
  }

  /**
   * Runs the session's statements one at a time: locks, unlocks, renewals and group commits
   * share it, and pg only queues concurrent ones with a deprecation warning (an error in pg 9).
   */
  private serial<T>(statement: () => Promise<T>): Promise<T> {
    const run = this.statements.then(statement, statement)
    this.statements = run.catch(() => undefined)
    return run
  }

  /** Ends the session, which frees every lock it holds. */
  async close(): Promise<void> {
    if (this.nextCommit) clearTimeout(this.nextCommit)
    this.nextCommit = null
    for (const w of this.waiting.splice(0)) w.reject(new LeaseLostError('lease session closed'))
    this.markLost(new LeaseLostError('lease session closed'))
    await this.client.end()
  }

  /** Never rejects: each waiter learns its outcome. */
  private async commitWaiting(): Promise<void> {
    if (this.committing || this.waiting.length === 0) return
    this.committing = true
    this.lastCommitAtMs = Date.now()
    try {
      await this.commitGroup(this.takeGroup(), true)
    } finally {
      this.committing = false
    }
    if (this.waiting.length > 0) this.scheduleCommit()
  }

  /**
   * One statement for the group's batches. When PostgreSQL refuses it for what it carries (or its
   * size, or its time) for a group of several, each batch is committed alone (`split`): data one
   * partition's batch carries fails the statement for every partition in it, and must fail only
   * that one. A lost connection is not retried here: every batch fails with it.
   */
  private async commitGroup(group: typeof this.waiting, split: boolean): Promise<void> {
    try {
      this.check()
      const through = await this.serial(() => commitBatches(this.client, group.map((w) => w.batch)))
      this.confirmed()
      for (const w of group) w.resolve(through)
    } catch (err) {
      if (split && group.length > 1 && !this.lost && isRefusedStatement(err)) for (const w of group) await this.commitGroup([w], false)
      else for (const w of group) w.reject(err)
    }
  }

  /**
   * The waiting batches of the next group commit, oldest first, up to MAX_GROUP_OPS op-log rows
   * (at least one batch): one statement stays well inside the session's statement timeout
   * however many partitions catch up on a backlog at once.
   */
  private takeGroup(): typeof this.waiting {
    let ops = 0
    let n = 0
    for (const w of this.waiting) {
      if (n > 0 && ops + w.batch.ops.length > MAX_GROUP_OPS) break
      ops += w.batch.ops.length
      n++
    }
    return this.waiting.splice(0, n)
  }

  private confirmed(): void {
    this.confirmedAtMs = Date.now()
  }

  /** Never rejects: a renewal that fails or takes too long marks the session lost. */
  private async renew(): Promise<void> {
    if (this.lost) return
    try {
      this.check()
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${this.timing.leaseTtlMs} ms`)), this.timing.leaseTtlMs)
      })
      try {
        await Promise.race([this.serial(() => this.client.query('SELECT 1')), timeout])
      } finally {
        clearTimeout(timer)
      }
      this.confirmed()
    } catch (err) {
      this.markLost(err instanceof LeaseLostError ? err : new LeaseLostError('lease renewal failed', { cause: err }))
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

/** Ownership of one partition: its lock on the process's lease session. */
export class PartitionLease {
  constructor(
    readonly session: LeaseSession,
    readonly partition: number,
  ) {}

  get isLost(): boolean {
    return this.session.isLost
  }

  get whenLost(): Promise<LeaseLostError> {
    return this.session.whenLost
  }

  check(): void {
    this.session.check()
  }

  /** Resolves with the op-log id each compacted state holds rows through (store.ts commitBatches). */
  commit(batch: Batch): Promise<Committed> {
    return this.session.commit(batch)
  }

  release(): Promise<void> {
    return this.session.unlock(this.partition)
  }
}

/**
 * Hands out partition leases on the process's current lease session, opening a new session
 * when there is none or the last one was lost.
 */
export class LeaseHolder {
  private session: Promise<LeaseSession> | null = null
  private closed = false

  constructor(
    private readonly databaseUrl: string,
    readonly timing: LeaseTiming,
  ) {}

  /**
   * The backend pid of the live session, opened (again) when there is none or the last was lost:
   * a core holding no lease still shows as live to the others (balance.ts).
   */
  async open(): Promise<number> {
    return (await this.current()).backendPid
  }

  /** The lease of `partition`, or null when another process holds it. */
  async tryAcquire(partition: number): Promise<PartitionLease | null> {
    const session = await this.current()
    return (await session.tryLock(partition)) ? new PartitionLease(session, partition) : null
  }

  /**
   * Ends the session (with whatever leases it holds); the next open() starts a new one, which the
   * other cores see as a core joining: the ones that took this core's partitions as orphans give
   * its share back (balance.ts).
   */
  async restart(): Promise<void> {
    const session = this.session
    this.session = null
    const s = await session?.catch(() => null)
    await s?.close()
  }

  /** Ends the session; no other opens after it (a lease session left open would count as a live core). */
  async close(): Promise<void> {
    this.closed = true
    const session = this.session
    this.session = null
    const s = await session?.catch(() => null)
    await s?.close()
  }

  private async current(): Promise<LeaseSession> {
    if (this.closed) throw new LeaseLostError('lease holder closed')
    const open = this.session
    const s = open ? await open.catch(() => null) : null
    if (s && !s.isLost) return s
    // Replaced before anything is awaited: callers that found the same lost session share the
    // next one (a second would live on unused, renewing, and count as another live core).
    if (this.session === open) this.session = this.reopen(s)
    return this.session!
  }

  private async reopen(lost: LeaseSession | null): Promise<LeaseSession> {
    await lost?.close().catch(() => undefined) // already lost: only the socket is left to end
    return LeaseSession.open(this.databaseUrl, this.timing)
  }
}
