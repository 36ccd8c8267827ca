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

/** Update bytes per page at most (a larger row comes alone). */
const PAGE_BYTES = 4 * 1024 ** 2

/**
 * What a page reads besides id and update (in the innermost select, and as the outer one names
 * them), and its rows at most. node-postgres parses a page in one go on the event loop, so whole
 * rows (three timestamps each) come 1,000 at a time, as blame and rollback always read them.
 */
interface PageShape {
  inner: string
  outer: string
  rows: number
}
const UPDATE_ONLY: PageShape = { inner: '', outer: '', rows: 5_000 }
const WHOLE_ROW: PageShape = { inner: ', stream_seq, user_id, ingest_ts, COALESCE(event_ts, ingest_ts) AS event_ts', outer: ', stream_seq, user_id, ingest_ts, event_ts', rows: 1_000 }

/**
 * A document's op-log rows in `range` (RowRange) with an id past `afterId`, in
 * stream order (op-log id: history.ts says why), a page per query: at most shape.rows rows and,
 * past its first row, PAGE_BYTES of updates (summed in SQL, so a page of large updates is never
 * fetched whole).
 */
async function* pages<R extends { id: string; update: Buffer }>(pool: pg.Pool, tenant: string, docId: string, range: RowRange, shape: PageShape): AsyncGenerator<R[]> {
  const { afterSeq, uptoSeq, afterTime = null, uptoTime = null } = range
  let afterId = String(range.afterId ?? 0)
  for (;;) {
    // `ahead`: the rows the page looked at before the byte cut. Fewer than shape.rows and none cut:
    // the last page (asking again would walk the rest of the document's rows for nothing: the
    // index is by id, stream_seq is checked row by row).
    const r = await pool.query<R & { ahead: string }>(
      `SELECT id, update${shape.outer}, ahead FROM (
         SELECT *, count(*) OVER () AS ahead,
                sum(octet_length(update)) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) - octet_length(update) AS before
         FROM (SELECT id, update${shape.inner} FROM op_log WHERE tenant = $1 AND doc_id = $2 AND id > $3::bigint
                 AND (stream_seq > $4 OR ingest_ts > $6::timestamptz)
                 AND stream_seq <= $5 AND ($7::timestamptz IS NULL OR ingest_ts <= $7::timestamptz)
               ORDER BY id LIMIT ${shape.rows}) ahead
       ) page WHERE before < ${PAGE_BYTES} ORDER BY id`,
      [tenant, docId, afterId, afterSeq, uptoSeq, afterTime, uptoTime],
    )
    if (r.rows.length === 0) return
    yield r.rows
    const ahead = Number(r.rows[0]!.ahead)
    if (ahead < shape.rows && r.rows.length === ahead) return
    afterId = r.rows.at(-1)!.id
  }
}

/**
 * Which rows: afterSeq < stream_seq <= uptoSeq, and an op-log id past afterId (default 0). A time
 * cuts across stream order: one message carries an edge's updates of several moments, each with
 * its ingest time, and messages of several edges interleave, so the updates ingested by a point
 * in time are no stream prefix (point-in-time.ts Cut). `uptoTime`: only rows ingested by then;
 * `afterTime`: rows ingested after it are in the range too, whatever their sequence.
 */
export interface RowRange {
  afterSeq: number
  uptoSeq: number
  afterId?: number
  /** Ingest times as PostgreSQL writes a timestamptz (point-in-time.ts Cut). */
  afterTime?: string | undefined
  uptoTime?: string | undefined
}

/** The rows (pages) as blame and rollback replay them. */
export async function* docRows(pool: pg.Pool, tenant: string, docId: string, range: RowRange): AsyncGenerator<OpLogRow> {
  type Row = { id: string; update: Buffer; stream_seq: string; user_id: string; ingest_ts: Date; event_ts: Date }
  for await (const page of pages<Row>(pool, tenant, docId, range, WHOLE_ROW)) {
    for (const row of page) yield { id: row.id, seq: Number(row.stream_seq), user: row.user_id, ingestTs: row.ingest_ts, eventTs: row.event_ts, update: row.update }
  }
}

/** The rows' updates only, a page at a time: parsing the rows' times too doubled the time of a 100K-row replay (point-in-time). */
export async function* docUpdatePages(pool: pg.Pool, tenant: string, docId: string, range: RowRange): AsyncGenerator<Buffer[]> {
  for await (const page of pages<{ id: string; update: Buffer }>(pool, tenant, docId, range, UPDATE_ONLY)) yield page.map((row) => row.update)
}
