import type pg from 'pg'
import { hasSnapshotKeys, snapshotKey, snapshotMetadata } from '../contracts/mod.ts'
import type { BlobStore } from '../runtime/blobs/blob-store.ts'
import type { Logger } from '../runtime/log.ts'
import { docKey } from './doc-cache.ts'
import type { CoreMetrics } from './metrics.ts'

/** A compacted state just committed, with the ingest time of the newest update it holds. */
export interface CompactedState {
  tenant: string
  docId: string
  state: Uint8Array
  /** The highest stream sequence `state` holds. */
  lastStreamSeq: number
  /**
   * `state` holds every op-log row of the document with an id up to this (null: unknown). Not
   * every row with a sequence up to lastStreamSeq: a redelivered update commits after later ones.
   */
  throughOpId: number | null
  /** ms since epoch */
  lastIngestTs: number
}

export interface SnapshotOptions {
  /** Least time between two snapshots of one document. Default 600_000 (10 min). */
  snapshotIntervalMs: number
  /** Snapshots waiting to be written past which new ones are skipped (the next compaction offers again). Default 64. */
  maxQueuedSnapshots: number
  /**
   * Most snapshots written per second. Documents opened together reach compaction together;
   * unpaced, their first snapshots (two fsyncs and a PostgreSQL commit each, on the filesystem
   * store) took the disk from nats-server and PostgreSQL for seconds, and ingest → materialized
   * P95 went from ~40 to 200–280 ms (loadtest materialize). Default 10.
   */
  maxPerSecond: number
}

export const SNAPSHOT_DEFAULTS: SnapshotOptions = { snapshotIntervalMs: 600_000, maxQueuedSnapshots: 64, maxPerSecond: 10 }

/** Documents whose last snapshot time is remembered; past it the oldest are forgotten (and asked for again). */
const MAX_REMEMBERED_DOCS = 100_000

/**
 * Writes compacted document states to the blob store as snapshots
 * (`snapshots/<tenant>/<doc>/<seq>.ydoc`, tagged with their stream sequence and time) and
 * indexes them in the `snapshots` table. Invariant: a `snapshots` row exists only for a blob
 * whose put completed, so a reader that finds a row finds whole bytes (or, after the lifecycle
 * rule expired it, none — then it falls back to an older one or the op log). Off the commit
 * path: a snapshot that fails is logged and counted, and loses nothing (PostgreSQL holds the
 * state and the log). At most one snapshot per document per `snapshotIntervalMs`, so blob
 * writes follow documents' lifetimes, not their edit rates.
 */
export class Snapshots {
  private readonly opts: SnapshotOptions
  private readonly lastTakenMs = new Map<string, number>()
  private readonly queue: CompactedState[] = []
  private writing: Promise<void> | null = null
  /** The state being written, and whether its document was forgotten meanwhile. */
  private inHand: { state: CompactedState; forgotten: boolean } | null = null
  /** Ends the pause between two writes early (flush). */
  private hurry: (() => void) | null = null
  private flushing = false

  constructor(
    readonly blobs: BlobStore,
    private readonly pool: pg.Pool,
    private readonly log: Logger,
    private readonly metrics: CoreMetrics,
    opts: Partial<SnapshotOptions> = {},
  ) {
    this.opts = { ...SNAPSHOT_DEFAULTS, ...opts }
  }

  /** After a commit: queues the states whose document is due a snapshot. Never throws. */
  offer(states: CompactedState[]): void {
    for (const s of states) {
      if (!hasSnapshotKeys(s.tenant, s.docId)) {
        this.metrics.snapshots.inc({ outcome: 'unkeyable' })
        continue
      }
      if (this.queue.length >= this.opts.maxQueuedSnapshots) {
        this.metrics.snapshots.inc({ outcome: 'skipped' })
        continue
      }
      this.queue.push(s)
    }
    this.writing ??= this.drain().finally(() => (this.writing = null))
  }

  /**
   * A document was deleted or erased (null: every document of a removed tenant): its queued
   * states are dropped, and one being written is taken back once its put returns. Paced, a
   * queued state could otherwise be written seconds after an erasure removed everything, and
   * nothing would remove it again.
   */
  forget(tenant: string, docId: string | null): void {
    const of = (s: CompactedState) => s.tenant === tenant && (docId === null || s.docId === docId)
    const kept = this.queue.filter((s) => !of(s))
    this.queue.splice(0, this.queue.length, ...kept)
    if (this.inHand && of(this.inHand.state)) this.inHand.forgotten = true
    if (docId !== null) this.lastTakenMs.delete(docKey(tenant, docId))
  }

  /** Writes the queued snapshots without pausing between them, and waits for them (stop, tests). */
  async flush(): Promise<void> {
    this.flushing = true
    try {
      while (this.writing) {
        this.hurry?.()
        await this.writing
      }
    } finally {
      this.flushing = false
    }
  }

  private async drain(): Promise<void> {
    for (let s = this.queue.shift(); s; s = this.queue.shift()) {
      // In hand from here on: a forget() while due() asks PostgreSQL reaches it too.
      const inHand = { state: s, forgotten: false }
      this.inHand = inHand
      try {
        if (!(await this.due(s)) || inHand.forgotten) {
          this.inHand = null
          continue
        }
        const started = Date.now()
        await this.write(inHand)
        await this.pause(started + 1000 / this.opts.maxPerSecond - Date.now())
      } catch (err) {
        this.metrics.snapshots.inc({ outcome: 'failed' })
        this.log.warn({ err, tenant: s.tenant, docId: s.docId, seq: s.lastStreamSeq }, 'snapshot not written; the next compaction tries again')
      }
    }
  }

  /** Waits `ms` between two writes; flush() ends the wait early. */
  private pause(ms: number): Promise<void> {
    if (ms <= 0 || this.flushing) return Promise.resolve()
    return new Promise((resolve) => {
      const end = () => {
        clearTimeout(timer)
        this.hurry = null
        resolve()
      }
      const timer = setTimeout(end, ms)
      this.hurry = end
    })
  }

  private async due(s: CompactedState): Promise<boolean> {
    const k = docKey(s.tenant, s.docId)
    let last = this.lastTakenMs.get(k)
    if (last === undefined) {
      const r = await this.pool.query<{ at: Date | null }>('SELECT max(taken_at) AS at FROM snapshots WHERE tenant = $1 AND doc_id = $2', [s.tenant, s.docId])
      last = r.rows[0]?.at?.getTime() ?? 0
      this.remember(k, last)
    }
    return Date.now() - last >= this.opts.snapshotIntervalMs
  }

  private async write(inHand: { state: CompactedState; forgotten: boolean }): Promise<void> {
    const s = inHand.state
    const key = snapshotKey(s.tenant, s.docId, s.lastStreamSeq)
    const time = new Date(s.lastIngestTs)
    try {
      await this.blobs.put(key, s.state, snapshotMetadata({ seq: s.lastStreamSeq, time }))
      if (!inHand.forgotten) {
        await this.pool.query(
          `INSERT INTO snapshots (tenant, doc_id, stream_seq, last_ingest_ts, blob_key, bytes, through_op_id) VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (tenant, doc_id, stream_seq) DO NOTHING`,
          [s.tenant, s.docId, s.lastStreamSeq, time, key, s.state.byteLength, s.throughOpId],
        )
      }
    } finally {
      this.inHand = null
    }
    if (inHand.forgotten) {
      // Forgotten while in hand: what this write put goes again (the row before its blob, as retention does).
      await this.pool.query('DELETE FROM snapshots WHERE tenant = $1 AND doc_id = $2 AND stream_seq = $3', [s.tenant, s.docId, s.lastStreamSeq])
      await this.blobs.delete(key)
      this.metrics.snapshots.inc({ outcome: 'forgotten' })
      return
    }
    this.remember(docKey(s.tenant, s.docId), Date.now())
    this.metrics.snapshots.inc({ outcome: 'written' })
    this.metrics.snapshotBytes.inc(s.state.byteLength)
    await this.supersedePrevious(s)
  }

  /**
   * Tags the document's snapshot before `s` as superseded: the bucket's lifecycle rule expires
   * only those, so it never takes a document's newest. An untagged one is no loss: core's
   * retention prunes it (the rule is the backstop).
   */
  private async supersedePrevious(s: CompactedState): Promise<void> {
    try {
      const r = await this.pool.query<{ blob_key: string }>(
        'SELECT blob_key FROM snapshots WHERE tenant = $1 AND doc_id = $2 AND stream_seq < $3 ORDER BY stream_seq DESC LIMIT 1',
        [s.tenant, s.docId, s.lastStreamSeq],
      )
      if (r.rows[0]) await this.blobs.supersede(r.rows[0].blob_key)
    } catch (err) {
      this.metrics.snapshots.inc({ outcome: 'untagged' })
      this.log.warn({ err, tenant: s.tenant, docId: s.docId }, 'previous snapshot not tagged superseded; retention prunes it')
    }
  }

  private remember(k: string, atMs: number): void {
    this.lastTakenMs.delete(k)
    this.lastTakenMs.set(k, atMs)
    if (this.lastTakenMs.size > MAX_REMEMBERED_DOCS) this.lastTakenMs.delete(this.lastTakenMs.keys().next().value!)
  }
}
