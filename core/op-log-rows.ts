import type pg from 'pg'

/** One op-log row of a document, as blame and rollback replay it. */
export interface OpLogRow {
  id: string
  seq: number
  user: string
  /** When the edge took it. */
  ingestTs: Date
  /** When the client made it (the ingest time when it gave none). */
  eventTs: Date
  update: Uint8Array
}

/** Rows fetched per query: memory stays bounded on a document with a long log. */
const PAGE_ROWS = 1_000

/**
 * A document's op-log rows with `afterSeq < stream_seq <= uptoSeq`, in the document's stream
 * order (op-log id: history.ts says why), read a page at a time.
 */
export async function* docRows(pool: pg.Pool, tenant: string, docId: string, afterSeq: number, uptoSeq: number): AsyncGenerator<OpLogRow> {
  let afterId = '0'
  for (;;) {
    const r = await pool.query<{ id: string; stream_seq: string; user_id: string; ingest_ts: Date; event_ts: Date; update: Buffer }>(
      `SELECT id, stream_seq, user_id, ingest_ts, COALESCE(event_ts, ingest_ts) AS event_ts, update FROM op_log
       WHERE tenant = $1 AND doc_id = $2 AND id > $3::bigint AND stream_seq > $4 AND stream_seq <= $5
       ORDER BY id LIMIT ${PAGE_ROWS}`,
      [tenant, docId, afterId, afterSeq, uptoSeq],
    )
    for (const row of r.rows) {
      yield { id: row.id, seq: Number(row.stream_seq), user: row.user_id, ingestTs: row.ingest_ts, eventTs: row.event_ts, update: row.update }
    }
    if (r.rows.length < PAGE_ROWS) return
    afterId = r.rows.at(-1)!.id
  }
}
