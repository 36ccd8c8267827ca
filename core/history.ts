import type pg from 'pg'
import * as Y from 'yjs'
import { HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT, HISTORY_MAX_PAGE_BYTES, HistoryParam, type HistoryEntry, type HistoryPage } from '../contracts/mod.ts'

/**
 * A document's op log read as its history. The op log is append-only and a document's rows are
 * inserted in its stream order (one partition's worker commits them, in order), so the op-log id
 * orders a document's updates, newest last; the index op_log_doc (tenant, doc_id, id) serves both
 * reads below with one backward index scan.
 */

/** The document's last applied update: its stream sequence and the time core committed it. */
export interface LastApplied {
  seq: number
  committedAt: Date
}

/**
 * Staleness of a read answer is told per document, not by the partition's checkpoint: the
 * highest stream sequence the document holds (a redelivered update commits after later ones, so
 * not always its newest row's) and when its newest row became durable; it needs no knowledge of
 * partitions or consumers, and it stays true after a rebalance. The partition checkpoint's time
 * would move on with other documents' edits and say nothing about this one. Null when the
 * tenant has no such document.
 */
export async function readLastApplied(c: pg.ClientBase | pg.Pool, tenant: string, docId: string): Promise<LastApplied | null> {
  // The highest sequence from the compacted state's and its tail's, not a scan of every row.
  const r = await c.query<{ seq: string | null; committed_at: Date | null }>(
    `SELECT GREATEST(d.last_stream_seq, (SELECT max(o.stream_seq) FROM op_log o WHERE o.tenant = $1 AND o.doc_id = $2 AND o.id > COALESCE(d.through_op_id, 0))) AS seq,
            (SELECT o.committed_at FROM op_log o WHERE o.tenant = $1 AND o.doc_id = $2 ORDER BY o.id DESC LIMIT 1) AS committed_at
     FROM (SELECT 1) one LEFT JOIN docs d ON d.tenant = $1 AND d.doc_id = $2`,
    [tenant, docId],
  )
  const row = r.rows[0]
  return row?.seq && row.committed_at ? { seq: Number(row.seq), committedAt: row.committed_at } : null
}

/** A history request: page size and the cursor after which it starts (null: the newest). */
export interface HistoryQuery {
  limit: number
  /** Op-log id; the page holds entries with smaller ids. */
  beforeId: string | null
}

/** The query of `GET …/history`, or the reason it is refused (a 400). */
export function parseHistoryQuery(params: URLSearchParams): HistoryQuery | { error: string } {
  const limitText = params.get(HistoryParam.Limit)
  let limit = HISTORY_DEFAULT_LIMIT
  if (limitText !== null) {
    limit = /^\d{1,4}$/.test(limitText) ? Number(limitText) : 0
    if (limit < 1 || limit > HISTORY_MAX_LIMIT) return { error: `${HistoryParam.Limit} must be an integer from 1 to ${HISTORY_MAX_LIMIT}` }
  }
  const cursor = params.get(HistoryParam.Before)
  if (cursor === null) return { limit, beforeId: null }
  const beforeId = decodeCursor(cursor)
  return beforeId === null ? { error: `${HistoryParam.Before} is not a cursor this API gave` } : { limit, beforeId }
}

/**
 * One page of the document's history, newest first. Sizes come from SQL (octet_length reads a
 * stored value's length without fetching it); updates are fetched only for the page's entries,
 * to name their Yjs clients, and only up to HISTORY_MAX_PAGE_BYTES of them: past it the page
 * ends early with a `next` (the first entry always comes, so paging moves on). A page of
 * multi-MB updates would otherwise pull hundreds of MB into the process that commits every
 * tenant's edits.
 */
export async function readHistoryPage(c: pg.ClientBase | pg.Pool, tenant: string, docId: string, q: HistoryQuery): Promise<HistoryPage> {
  // event_ts is NULL on rows from before migration 005: read as ingest_ts, as that migration says.
  // `before`: the bytes of the newer rows of this page; the update only while they are under the budget.
  const r = await c.query<{ id: string; stream_seq: string; user_id: string; ingest_ts: Date; event_ts: Date; bytes: number; update: Buffer | null; status: HistoryEntry['status'] }>(
    `SELECT id, stream_seq, user_id, ingest_ts, event_ts, bytes, status, CASE WHEN before < $5 THEN update END AS update
     FROM (SELECT *, COALESCE(sum(bytes) OVER (ORDER BY id DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
           FROM (SELECT id, stream_seq, user_id, ingest_ts, COALESCE(event_ts, ingest_ts) AS event_ts, octet_length(update) AS bytes, update, status
                 FROM op_log WHERE tenant = $1 AND doc_id = $2 AND ($3::bigint IS NULL OR id < $3::bigint)
                 ORDER BY id DESC LIMIT $4) newest) page
     ORDER BY id DESC`,
    [tenant, docId, q.beforeId, q.limit + 1, HISTORY_MAX_PAGE_BYTES],
  )
  const rows: (typeof r.rows)[number][] = []
  for (const row of r.rows) {
    if (rows.length === q.limit || row.update === null) break
    rows.push(row)
  }
  return {
    entries: rows.map((row) => ({
      seq: Number(row.stream_seq),
      user: row.user_id,
      ts: row.ingest_ts.toISOString(),
      eventTs: row.event_ts.toISOString(),
      bytes: row.bytes,
      clients: updateClients(row.update!),
      status: row.status,
    })),
    next: r.rows.length > rows.length ? encodeCursor(rows.at(-1)!.id) : null,
  }
}

/** Yjs client ids with items in the update (a deletion names the deleted items' clients, not the deleter's). */
function updateClients(update: Uint8Array): number[] {
  return [...Y.parseUpdateMeta(update).from.keys()].sort((a, b) => a - b)
}

// The cursor is opaque to clients (the op-log id, base64url), so its form can change.
const encodeCursor = (id: string) => Buffer.from(`o${id}`).toString('base64url')

function decodeCursor(cursor: string): string | null {
  const m = /^o([1-9]\d{0,17})$/.exec(Buffer.from(cursor, 'base64url').toString('latin1'))
  return m ? m[1]! : null
}
