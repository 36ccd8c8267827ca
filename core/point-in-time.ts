import type pg from 'pg'
import * as Y from 'yjs'
import { PointSeqText, PointTime } from '../contracts/mod.ts'
import type { BlobStore } from '../runtime/blobs/blob-store.ts'
import { docUpdatePages, type RowRange } from './op-log-rows.ts'

/** A point in a document's life: a stream sequence, or a time (the updates ingested by then). */
export type PointInTime = { seq: number } | { time: Date }

/** `?at=` as a PointInTime: a stream sequence (PointSeqText) or a zoned ISO 8601 time on a real date (PointTime); null when it is neither. */
export function parsePointInTime(at: string): PointInTime | null {
  if (PointSeqText.safeParse(at).success) return { seq: Number(at) }
  return PointTime.safeParse(at).success ? { time: new Date(at) } : null
}

/**
 * Where a point in time cuts the op log: the rows up to stream sequence `seq` — only those
 * ingested by `time` when set (a time that stream order does not follow: RowRange uptoTime).
 */
export interface Cut {
  seq: number
  /** An ingest time as PostgreSQL writes a timestamptz. */
  time?: string | undefined
}

/** The document as it was at a point, and where that point cuts the op log (`seq`: the last stream sequence it holds). */
export interface StateAt extends Cut {
  update: Uint8Array
}

/** Synchronous work a replay does before it lets the event loop run (every tenant's commits share it). */
const SLICE_MS = 10

/** Heavy reads waiting for a turn; one resumes per turn of the event loop. */
const waiting: (() => void)[] = []

function resumeOne(): void {
  waiting.shift()!()
  if (waiting.length > 0) setImmediate(resumeOne)
}

/**
 * Resolves on a later turn of the event loop, one waiter per turn: however many heavy reads run,
 * a turn carries at most one slice of their work (each resumed on its own turn would let N of
 * them run back to back: 4 concurrent replays held the loop 50-240 ms at a time).
 */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => {
    if (waiting.push(resolve) === 1) setImmediate(resumeOne)
  })
}

/**
 * Runs `each` on every row, waiting for the next turn (nextTurn) whenever SLICE_MS of work has
 * passed: core's read API shares its loop with every tenant's commits, so a long replay or
 * decode must not hold it (the whole tail of a 100K-update document in one go held it ~600 ms).
 */
export async function forEachSliced<T>(rows: AsyncIterable<T> | Iterable<T>, each: (row: T) => void): Promise<void> {
  let sliceEnd = performance.now() + SLICE_MS
  for await (const row of rows) {
    each(row)
    if (performance.now() < sliceEnd) continue
    await nextTurn()
    sliceEnd = performance.now() + SLICE_MS
  }
}

/**
 * The document as it was at `at`, as a Y.Doc the caller destroys: every op-log update of it up
 * to the stream sequence `at` names (or, for a time, every one ingested by then), built from the
 * newest snapshot before that cut plus the op-log rows after it. Null when the document had no update by then. A snapshot
 * whose blob is gone (expired by the store's lifecycle rule) is passed over for an older one,
 * down to replaying the op log from its start.
 */
export async function readDocAt(pool: pg.Pool, blobs: BlobStore, tenant: string, docId: string, at: PointInTime): Promise<({ doc: Y.Doc } & Cut) | null> {
  // For a time: the last message with an update ingested by then and, when an update at or before
  // it in the stream was ingested later (an edge's batch spans the point, or another edge's message
  // came first), the newest ingest time the point takes (exact, as PostgreSQL writes it: the same
  // rows give the same cut, whatever time between them was asked) and the first message it leaves
  // out, before which a snapshot holds only updates ingested by then.
  const target = await pool.query<{ seq: string | null; upto: string | null; before: string | null }>(
    'seq' in at
      ? 'SELECT max(stream_seq) AS seq, NULL AS upto, NULL AS before FROM op_log WHERE tenant = $1 AND doc_id = $2 AND stream_seq <= $3'
      : `WITH cut AS (SELECT max(stream_seq) AS seq, max(ingest_ts) AS upto FROM op_log WHERE tenant = $1 AND doc_id = $2 AND ingest_ts <= $3),
              later AS (SELECT min(stream_seq) AS first FROM op_log WHERE tenant = $1 AND doc_id = $2 AND ingest_ts > $3)
         SELECT cut.seq, CASE WHEN later.first <= cut.seq THEN cut.upto::text END AS upto, CASE WHEN later.first <= cut.seq THEN later.first END AS before
         FROM cut, later`,
    [tenant, docId, 'seq' in at ? at.seq : at.time],
  )
  const seqText = target.rows[0]?.seq
  if (seqText === null || seqText === undefined) return null
  const seq = Number(seqText)
  const time = target.rows[0]?.upto ?? undefined
  const snapshots = await pool.query<{ stream_seq: string; blob_key: string; through_op_id: string | null }>(
    'SELECT stream_seq, blob_key, through_op_id FROM snapshots WHERE tenant = $1 AND doc_id = $2 AND stream_seq <= $3 ORDER BY stream_seq DESC',
    [tenant, docId, time ? Number(target.rows[0]!.before) - 1 : seq],
  )
  let base: Uint8Array | null = null
  // The rows after the snapshot: those committed after its state (a redelivered update commits
  // after later ones, so a lower sequence may come later), else, for a snapshot taken before
  // through_op_id was recorded, those past its sequence.
  let rows: RowRange = { afterSeq: 0, uptoSeq: seq, uptoTime: time }
  for (const s of snapshots.rows) {
    // A blob the store fails to give (S3 erroring or timing out) is passed over like a gone one:
    // the op log holds every update, so the answer is only slower. Not logged: readDocAt has no
    // logger, and giving it one would change every heavy read's signature for this one case.
    base = await blobs.get(s.blob_key).catch(() => null)
    if (base) {
      rows = s.through_op_id === null ? { ...rows, afterSeq: Number(s.stream_seq) } : { ...rows, afterId: Number(s.through_op_id) }
      break
    }
  }
  const doc = new Y.Doc()
  try {
    if (base) Y.applyUpdate(doc, base)
    // A transaction per slice of SLICE_MS, not per row: Yjs cleans up (merges structs, collects
    // garbage) once per slice, 3-4x faster than per row (loadtest state-at); about as fast as one
    // transaction for the whole tail (bench state-at, early point: p50 116 against 113 ms).
    for await (const page of docUpdatePages(pool, tenant, docId, rows)) {
      for (let i = 0; i < page.length; ) {
        // Each slice on its own turn, a page's first too (not straight after its I/O, beside others').
        await nextTurn()
        const sliceEnd = performance.now() + SLICE_MS
        Y.transact(doc, () => {
          do Y.applyUpdate(doc, page[i++]!)
          while (i < page.length && performance.now() < sliceEnd)
        })
      }
    }
    return { doc, seq, time }
  } catch (err) {
    doc.destroy()
    throw err
  }
}

/** The document as it was at `at` as one Yjs update (readDocAt), or null when it had no update by then. */
export async function readStateAt(pool: pg.Pool, blobs: BlobStore, tenant: string, docId: string, at: PointInTime): Promise<StateAt | null> {
  const built = await readDocAt(pool, blobs, tenant, docId, at)
  if (!built) return null
  try {
    return { update: Y.encodeStateAsUpdate(built.doc), seq: built.seq, time: built.time }
  } finally {
    built.doc.destroy()
  }
}
