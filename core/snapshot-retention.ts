import type pg from 'pg'
import type { BlobDeleteFailure, BlobStore } from '../runtime/blobs/blob-store.ts'
import type { Logger } from '../runtime/log.ts'
import type { CoreMetrics } from './metrics.ts'

export interface SnapshotRetentionOptions {
  /** Snapshots taken longer ago than this are deleted, except the newest of each document. Default 90. */
  retentionDays: number
  /** How often old snapshots are looked for. Default 3_600_000 (1 h). */
  pruneIntervalMs: number
  /** Snapshots deleted per transaction (and blob request); a round goes on until none is left. Default 1_000. */
  batchSize: number
}

export const SNAPSHOT_RETENTION_DEFAULTS: SnapshotRetentionOptions = { retentionDays: 90, pruneIntervalMs: 3_600_000, batchSize: 1_000 }

const DAY_MS = 86_400_000
/** One core prunes at a time (several cores run this timer). */
const PRUNE_LOCK_KEY = 0x64660008

/**
 * Snapshot retention (shared/BRIEF.md: snapshots 90 days): deletes snapshots taken more than
 * `retentionDays` ago, row first, then blob, in both backends — S3 also expires them by the
 * bucket's lifecycle rule (helm/), which this keeps the rows in step with.
 *
 * Invariants: the newest snapshot of each document is never deleted here (a cold load or an
 * old point-in-time read starts from it rather than the whole log); a row goes before its blob,
 * so a row always names a blob whose put completed (snapshots.ts) — a blob delete that fails
 * leaves an orphan blob, logged and counted, never a row without bytes.
 */
export class SnapshotRetention {
  private readonly opts: SnapshotRetentionOptions
  private timer: NodeJS.Timeout | null = null
  private round: Promise<unknown> | null = null
  private stopped = false

  constructor(
    private readonly blobs: BlobStore,
    private readonly pool: pg.Pool,
    private readonly log: Logger,
    private readonly metrics: CoreMetrics,
    opts: Partial<SnapshotRetentionOptions> = {},
  ) {
    this.opts = { ...SNAPSHOT_RETENTION_DEFAULTS, ...opts }
    if (!(this.opts.retentionDays > 0)) throw new RangeError(`snapshot retention must be a positive number of days, not ${this.opts.retentionDays}`)
  }

  /** Prunes now and every pruneIntervalMs. */
  start(): void {
    const run = () => {
      this.round ??= this.pruneOnce()
        .catch((err: unknown) => {
          this.metrics.snapshotsPruned.inc({ outcome: 'failed' })
          this.log.warn({ err }, 'snapshot retention round failed; the next round tries again')
        })
        .finally(() => (this.round = null))
    }
    run()
    this.timer = setInterval(run, this.opts.pruneIntervalMs)
    this.timer.unref()
  }

  async stop(): Promise<void> {
    this.stopped = true
    if (this.timer) clearInterval(this.timer)
    this.timer = null
    await this.round
  }

  /**
   * One round: every expired snapshot, batchSize at a time (a busy deployment takes millions a
   * day; one batch an interval would never catch up); how many rows and blobs went.
   */
  async pruneOnce(nowMs = Date.now()): Promise<{ rows: number; blobs: number }> {
    const cutoff = new Date(nowMs - this.opts.retentionDays * DAY_MS)
    const total = { rows: 0, blobs: 0 }
    for (;;) {
      const batch = await this.pruneBatch(cutoff)
      total.rows += batch.rows
      total.blobs += batch.blobs
      if (batch.rows < this.opts.batchSize || this.stopped) break
    }
    if (total.rows > 0) this.log.info({ ...total, retentionDays: this.opts.retentionDays }, 'expired snapshots deleted')
    return total
  }

  private async pruneBatch(cutoff: Date): Promise<{ rows: number; blobs: number }> {
    const c = await this.pool.connect()
    let keys: string[]
    try {
      await c.query('BEGIN')
      const locked = await c.query<{ ok: boolean }>('SELECT pg_try_advisory_xact_lock($1) AS ok', [PRUNE_LOCK_KEY])
      if (!locked.rows[0]!.ok) {
        await c.query('ROLLBACK')
        return { rows: 0, blobs: 0 }
      }
      const r = await c.query<{ blob_key: string }>(
        `DELETE FROM snapshots WHERE ctid IN (
           SELECT s.ctid FROM snapshots s
           WHERE s.taken_at < $1
             AND s.stream_seq < (SELECT max(n.stream_seq) FROM snapshots n WHERE n.tenant = s.tenant AND n.doc_id = s.doc_id)
           LIMIT $2)
         RETURNING blob_key`,
        [cutoff, this.opts.batchSize],
      )
      await c.query('COMMIT')
      keys = r.rows.map((row) => row.blob_key)
    } catch (err) {
      await c.query('ROLLBACK').catch((rollbackErr: unknown) => this.log.warn({ err: rollbackErr }, 'rollback after a failed retention round failed'))
      throw err
    } finally {
      c.release()
    }
    let failed: BlobDeleteFailure[]
    try {
      failed = await this.blobs.deleteMany(keys)
    } catch (err) {
      // The store is not answering: stop the round here rather than orphan every blob left.
      this.metrics.snapshotsPruned.inc({ outcome: 'blob-failed' }, keys.length)
      throw new Error(`${keys.length} expired snapshot rows deleted, their blobs not (orphans): ${(err as Error).message}`, { cause: err })
    }
    if (failed.length > 0) this.log.warn({ count: failed.length, first: failed.slice(0, 3) }, 'expired snapshot blobs not deleted (their rows are gone; the blobs are orphans)')
    this.metrics.snapshotsPruned.inc({ outcome: 'blob-failed' }, failed.length)
    this.metrics.snapshotsPruned.inc({ outcome: 'deleted' }, keys.length - failed.length)
    return { rows: keys.length, blobs: keys.length - failed.length }
  }
}
