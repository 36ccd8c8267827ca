import type pg from 'pg'

/** One row of the op log. */
export interface OpRow {
  tenant: string
  docId: string
  streamSeq: number
  msgId: string
  userId: string
  edgeId: string
  update: Uint8Array
  status: 'applied' | 'pending'
  /** ms since epoch */
  ingestTs: number
}

/** Materialized state of one document after a batch. */
export interface DocRow {
  tenant: string
  docId: string
  state: Uint8Array
  stateVector: Uint8Array
  lastStreamSeq: number
  /** Op-log rows this batch added for the doc. */
  ops: number
}

export interface DeadLetterRow {
  stream: string
  streamSeq: number
  subject: string
  tenant: string | null
  docId: string | null
  reason: string
  payload: Uint8Array
}

export interface Batch {
  consumer: string
  /** The consumer's new checkpoint: every stream sequence up to it is committed (worker.ts). */
  streamSeq: number
  /** Highest stream sequence committed by this batch. Default streamSeq. */
  maxSeq?: number
  ops: OpRow[]
  docs: DocRow[]
  deadLetters: DeadLetterRow[]
}

const buf = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)

export async function readCheckpoint(c: pg.ClientBase, consumer: string): Promise<number> {
  const r = await c.query<{ stream_seq: string }>('SELECT stream_seq FROM consumer_checkpoints WHERE consumer = $1', [consumer])
  return r.rows[0] ? Number(r.rows[0].stream_seq) : 0
}

/** The consumer's checkpoint and the highest stream sequence it ever committed (0, 0: none). */
export async function readCheckpointRange(c: pg.ClientBase, consumer: string): Promise<{ checkpoint: number; maxSeq: number }> {
  const r = await c.query<{ stream_seq: string; max_seq: string }>('SELECT stream_seq, max_seq FROM consumer_checkpoints WHERE consumer = $1', [consumer])
  const row = r.rows[0]
  return row ? { checkpoint: Number(row.stream_seq), maxSeq: Math.max(Number(row.stream_seq), Number(row.max_seq)) } : { checkpoint: 0, maxSeq: 0 }
}

/** A stream message that may already be committed; `op` is absent when it did not decode. */
export interface CommittedCandidate {
  streamSeq: number
  op?: { tenant: string; docId: string; msgId: string }
}

/**
 * Stream sequences among `candidates` that PostgreSQL already holds: their update is in the op
 * log (by tenant, doc and msg id) or the message is in dead_letters. One round trip.
 */
export async function findCommitted(c: pg.ClientBase, stream: string, candidates: CommittedCandidate[]): Promise<Set<number>> {
  if (candidates.length === 0) return new Set()
  const r = await c.query<{ s: string }>(
    `SELECT x.s FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS x(s, t, d, m)
     WHERE EXISTS (SELECT 1 FROM op_log o WHERE o.tenant = x.t AND o.doc_id = x.d AND o.msg_id = x.m)
        OR EXISTS (SELECT 1 FROM dead_letters dl WHERE dl.stream = $5 AND dl.stream_seq = x.s)`,
    [candidates.map((k) => k.streamSeq), candidates.map((k) => k.op?.tenant ?? null), candidates.map((k) => k.op?.docId ?? null), candidates.map((k) => k.op?.msgId ?? null), stream],
  )
  return new Set(r.rows.map((row) => Number(row.s)))
}

export async function readDocState(c: pg.ClientBase | pg.Pool, tenant: string, docId: string): Promise<Uint8Array | null> {
  const r = await c.query<{ state: Buffer }>('SELECT state FROM docs WHERE tenant = $1 AND doc_id = $2', [tenant, docId])
  return r.rows[0]?.state ?? null
}

/**
 * Commits a batch in one transaction: op-log rows, document states, dead letters and the
 * consumer checkpoint land together or not at all — what makes redelivery exactly-once.
 */
export async function commitBatch(c: pg.ClientBase, b: Batch): Promise<void> {
  await c.query('BEGIN')
  try {
    if (b.ops.length > 0) {
      await c.query(
        `INSERT INTO op_log (tenant, doc_id, stream_seq, msg_id, user_id, edge_id, update, status, ingest_ts)
         SELECT t, d, s, m, u, e, up, st, to_timestamp(i / 1000.0)
         FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::text[], $9::float8[])
           AS x(t, d, s, m, u, e, up, st, i)
         ON CONFLICT (tenant, doc_id, msg_id) DO NOTHING`,
        [
          b.ops.map((o) => o.tenant),
          b.ops.map((o) => o.docId),
          b.ops.map((o) => o.streamSeq),
          b.ops.map((o) => o.msgId),
          b.ops.map((o) => o.userId),
          b.ops.map((o) => o.edgeId),
          b.ops.map((o) => buf(o.update)),
          b.ops.map((o) => o.status),
          b.ops.map((o) => o.ingestTs),
        ],
      )
    }
    if (b.docs.length > 0) {
      await c.query(
        `INSERT INTO docs (tenant, doc_id, state, state_vector, last_stream_seq, op_count)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[], $5::bigint[], $6::bigint[])
         ON CONFLICT (tenant, doc_id) DO UPDATE SET
           state = excluded.state, state_vector = excluded.state_vector,
           last_stream_seq = excluded.last_stream_seq, op_count = docs.op_count + excluded.op_count, updated_at = now()`,
        [
          b.docs.map((d) => d.tenant),
          b.docs.map((d) => d.docId),
          b.docs.map((d) => buf(d.state)),
          b.docs.map((d) => buf(d.stateVector)),
          b.docs.map((d) => d.lastStreamSeq),
          b.docs.map((d) => d.ops),
        ],
      )
    }
    for (const dl of b.deadLetters) {
      await c.query(
        `INSERT INTO dead_letters (stream, stream_seq, subject, tenant, doc_id, reason, payload)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (stream, stream_seq) DO NOTHING`,
        [dl.stream, dl.streamSeq, dl.subject, dl.tenant, dl.docId, dl.reason, buf(dl.payload)],
      )
    }
    await c.query(
      `INSERT INTO consumer_checkpoints (consumer, stream_seq, max_seq) VALUES ($1, $2, $3)
       ON CONFLICT (consumer) DO UPDATE SET stream_seq = excluded.stream_seq,
         max_seq = GREATEST(consumer_checkpoints.max_seq, excluded.max_seq), updated_at = now()`,
      [b.consumer, b.streamSeq, Math.max(b.streamSeq, b.maxSeq ?? 0)],
    )
    await c.query('COMMIT')
  } catch (err) {
    // A failed ROLLBACK means the session is gone, which aborts the transaction anyway;
    // the commit error is the one worth reporting.
    await c.query('ROLLBACK').catch(() => undefined)
    throw err
  }
}
