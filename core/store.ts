import type pg from 'pg'
import * as Y from 'yjs'
import { DeadLetterReason } from '../contracts/mod.ts'
import { mergeMany } from '../runtime/yjs-items.ts'
import { docKey } from './doc-cache.ts'
import { isRefusedData } from './errors.ts'
import { ERASURE_CLOCK_SKEW_MS } from './erasure-watch.ts'

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
  /** When the client made the edit (ms since epoch): the envelope's eventTs, else ingestTs. */
  eventTs: number
}

/** A compacted state of one document: everything its op log holds, folded into one update. */
export interface DocRow {
  tenant: string
  docId: string
  state: Uint8Array
  stateVector: Uint8Array
  lastStreamSeq: number
  /** Op-log rows folded into this state since the last compaction. */
  ops: number
  /** core/client-users.ts ownersJson of the document as of this state; null when docs.client_users holds them all already. */
  clientUsers: string | null
}

export interface DeadLetterRow {
  stream: string
  streamSeq: number
  /** Which update of the message (a batch carries several); 0 for a single envelope. */
  item: number
  subject: string
  tenant: string | null
  docId: string | null
  reason: string
  payload: Uint8Array
}

/** Which dead letter a row is: its UNIQUE (stream, stream_seq, item). */
export type DeadLetterKey = Pick<DeadLetterRow, 'stream' | 'streamSeq' | 'item'>

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

/** The consumer's checkpoint and the highest stream sequence it ever committed (0, 0: none). */
export async function readCheckpointRange(c: pg.ClientBase | pg.Pool, consumer: string): Promise<{ checkpoint: number; maxSeq: number }> {
  const r = await c.query<{ stream_seq: string; max_seq: string }>('SELECT stream_seq, max_seq FROM consumer_checkpoints WHERE consumer = $1', [consumer])
  const row = r.rows[0]
  return row ? { checkpoint: Number(row.stream_seq), maxSeq: Math.max(Number(row.stream_seq), Number(row.max_seq)) } : { checkpoint: 0, maxSeq: 0 }
}

/** An update of a stream message that may already be committed; `op` is absent when it did not decode. */
export interface CommittedCandidate {
  streamSeq: number
  item: number
  op?: { tenant: string; docId: string; msgId: string }
}

/** Key of one update of one stream message. */
export const itemKey = (streamSeq: number, item: number) => `${streamSeq}/${item}`

/**
 * Updates among `candidates` (as itemKey) that PostgreSQL already holds: in the op log (by
 * tenant, doc and msg id) or in dead_letters. One round trip.
 */
export async function findCommitted(c: pg.ClientBase | pg.Pool, stream: string, candidates: CommittedCandidate[]): Promise<Set<string>> {
  if (candidates.length === 0) return new Set()
  const r = await c.query<{ s: string; i: number }>(
    `SELECT x.s, x.i FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[]) AS x(s, i, t, d, m)
     WHERE EXISTS (SELECT 1 FROM op_log o WHERE o.tenant = x.t AND o.doc_id = x.d AND o.msg_id = x.m)
        OR EXISTS (SELECT 1 FROM dead_letters dl WHERE dl.stream = $6 AND dl.stream_seq = x.s AND dl.item = x.i)`,
    [candidates.map((k) => k.streamSeq), candidates.map((k) => k.item), candidates.map((k) => k.op?.tenant ?? null), candidates.map((k) => k.op?.docId ?? null), candidates.map((k) => k.op?.msgId ?? null), stream],
  )
  return new Set(r.rows.map((row) => itemKey(Number(row.s), row.i)))
}

/** A document as stored: its last compacted state and the op-log updates committed since. */
export interface StoredDoc {
  /** Null when the document was never compacted. */
  state: Uint8Array | null
  /** The compacted state's state vector, when read with it. */
  stateVector?: Uint8Array | null
  /** Updates after the compacted state, in commit order. */
  tail: Uint8Array[]
  /** Who sent each tail update (op_log.user_id). */
  tailUsers: string[]
  /** docs.client_users: the client ids' owners as of the compacted state (null: none known). */
  stateOwners: Record<string, string> | null
  /** The highest stream sequence of the document's updates (a late redelivery commits after higher ones). */
  maxSeq?: number
}

/** The stored parts of a document, or null when its tenant has no such document. One round trip. */
export async function readDocParts(c: pg.ClientBase | pg.Pool, tenant: string, docId: string): Promise<StoredDoc | null> {
  // The tail as rows, not as an array column: node-postgres parses a bytea array's text one
  // character at a time (measured: 8 s for a 12 MB tail, 0.3 s as rows). The state row first.
  const r = await c.query<{ id: string; state: Buffer | null; state_vector: Buffer | null; owners: Record<string, string> | null; update: Buffer | null; user_id: string | null; seq: string }>(
    `SELECT 0::bigint AS id, d.state, d.state_vector, d.client_users AS owners, NULL::bytea AS update, NULL AS user_id, d.last_stream_seq AS seq FROM docs d WHERE d.tenant = $1 AND d.doc_id = $2
     UNION ALL
     SELECT o.id, NULL, NULL, NULL, o.update, o.user_id, o.stream_seq FROM op_log o WHERE o.tenant = $1 AND o.doc_id = $2
       AND o.id > COALESCE((SELECT through_op_id FROM docs WHERE tenant = $1 AND doc_id = $2), 0)
     ORDER BY id`,
    [tenant, docId],
  )
  const head = r.rows[0]?.id === '0' ? r.rows[0] : null
  const state = head?.state ?? null
  const tailRows = head ? r.rows.slice(1) : r.rows
  const tail = tailRows.map((row) => row.update!)
  if (state === null && tail.length === 0) return null
  const maxSeq = r.rows.reduce((max, row) => Math.max(max, Number(row.seq)), 0)
  return { state, stateVector: state === null ? null : head!.state_vector, tail, tailUsers: tailRows.map((row) => row.user_id!), stateOwners: head?.owners ?? null, maxSeq }
}

/** The materialized document as one Yjs update (compacted state + tail), or null when there is none. */
export async function readDocState(c: pg.ClientBase | pg.Pool, tenant: string, docId: string): Promise<Uint8Array | null> {
  const parts = await readDocParts(c, tenant, docId)
  return parts && mergedState(parts)
}

/** The document of parts read already, as one update. */
export function mergedState(parts: StoredDoc): Uint8Array {
  const stored = stateAndTail(parts)
  // Merged without a Y.Doc (half the time of applying a big state and encoding it).
  return stored.tail ? Y.mergeUpdates([stored.state, stored.tail]) : stored.state
}

/**
 * The stored document's parts as its compacted state and, apart, the op-log tail after it merged
 * into one update (null when there is none). Apart, because
 * merging the tail into a large state costs tens of ms that an asker applying both in turn never
 * pays (the edge's room load). Merging is applying in order only when no two parts carry the
 * same ids; else the parts are applied in stream order, as core applied them, into one state
 * (Y.mergeUpdates keeps other content for ids carried twice with different content: the
 * data-quality violations core records and applies; Yjs keeps the first).
 */
export function stateAndTail(parts: StoredDoc): { state: Uint8Array; tail: Uint8Array | null } {
  if (parts.tail.length === 0) return { state: parts.state!, tail: null }
  if (onlyExtends(parts)) {
    const tail = mergeMany(parts.tail)
    return parts.state ? { state: parts.state, tail } : { state: tail, tail: null }
  }
  const doc = new Y.Doc()
  doc.transact(() => {
    for (const u of parts.state ? [parts.state, ...parts.tail] : parts.tail) Y.applyUpdate(doc, u)
  })
  const state = Y.encodeStateAsUpdate(doc)
  doc.destroy()
  return { state, tail: null }
}

/** True when each tail update's structs start at or past its clients' clocks in the state and the tail before it. */
function onlyExtends({ state, stateVector, tail }: StoredDoc): boolean {
  if (state && !stateVector) return false
  const clocks = stateVector ? Y.decodeStateVector(stateVector) : new Map<number, number>()
  for (const update of tail) {
    const { from, to } = Y.parseUpdateMeta(update)
    for (const [client, start] of from) if (start < (clocks.get(client) ?? 0)) return false
    for (const [client, end] of to) clocks.set(client, Math.max(clocks.get(client) ?? 0, end))
  }
  return true
}

/** SQL: how far an edge's clock may be from the database's (core/erasure-watch.ts). */
const SKEW = `interval '${ERASURE_CLOCK_SKEW_MS} milliseconds'`

/**
 * SQL: the document (tenant, doc) was deleted (its newest doc_deletions row, migration 008) before
 * `ms` (ms since epoch) by more than SKEW. An update that came earlier is kept: a restore shows it.
 */
const deletedBefore = (t: string, d: string, ms: string) =>
  `((SELECT dd.action = 'delete' AND dd.at + ${SKEW} < to_timestamp(${ms} / 1000.0) FROM doc_deletions dd WHERE dd.tenant = ${t} AND dd.doc_id = ${d} ORDER BY dd.id DESC LIMIT 1) IS TRUE)`

/** commitBatches' statement, built once. */
const COMMIT_BATCHES_SQL = `WITH input AS (
     SELECT x.*, ${deletedBefore('x.t', 'x.d', 'x.i')} OR EXISTS (SELECT 1 FROM erasures er
         WHERE er.tenant = x.t AND (er.doc_id = x.d OR er.doc_id IS NULL) AND er.at + ${SKEW} >= to_timestamp(x.i / 1000.0)) AS fenced
     FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::int[], $8::text[], $9::float8[], $28::int[], $31::float8[])
       AS x(t, d, s, m, u, e, o, st, i, n, ev)
   ), ops AS (
     INSERT INTO op_log (tenant, doc_id, stream_seq, msg_id, user_id, edge_id, update, status, ingest_ts, event_ts)
     SELECT t, d, s, m, u, e, substring($27::bytea FROM o FOR n), st, to_timestamp(i / 1000.0), to_timestamp(ev / 1000.0)
     FROM input WHERE NOT fenced
     ON CONFLICT (tenant, doc_id, msg_id) DO NOTHING
     RETURNING tenant, doc_id, id
   ), states AS (
     INSERT INTO docs (tenant, doc_id, state, state_vector, last_stream_seq, op_count, through_op_id, client_users)
     SELECT y.t, y.d, substring($29::bytea FROM y.so FOR y.sn), y.sv, y.s, y.n, y.through, y.cu
     FROM (SELECT x.*, GREATEST(
         (SELECT max(o.id) FROM ops o WHERE o.tenant = x.t AND o.doc_id = x.d),
         (SELECT max(o.id) FROM op_log o WHERE o.tenant = x.t AND o.doc_id = x.d)) AS through
       FROM unnest($10::text[], $11::text[], $12::int[], $13::bytea[], $14::bigint[], $15::bigint[], $30::int[], $32::jsonb[]) AS x(t, d, so, sv, s, n, sn, cu)) y
     WHERE y.through IS NOT NULL AND NOT EXISTS (SELECT 1 FROM input f WHERE f.fenced AND f.t = y.t AND f.d = y.d)
     ON CONFLICT (tenant, doc_id) DO UPDATE SET
       state = excluded.state, state_vector = excluded.state_vector, last_stream_seq = GREATEST(docs.last_stream_seq, excluded.last_stream_seq),
       op_count = docs.op_count + excluded.op_count, through_op_id = excluded.through_op_id, client_users = COALESCE(excluded.client_users, docs.client_users), updated_at = now()
     RETURNING tenant, doc_id, through_op_id
   ), dead AS (
     INSERT INTO dead_letters (stream, stream_seq, item, subject, tenant, doc_id, reason, payload)
     SELECT * FROM unnest($16::text[], $17::bigint[], $18::int[], $19::text[], $20::text[], $21::text[], $22::text[], $23::bytea[])
     ON CONFLICT (stream, stream_seq, item) DO NOTHING
     RETURNING 1
   ), checkpoints AS (
     INSERT INTO consumer_checkpoints (consumer, stream_seq, max_seq)
     SELECT * FROM unnest($24::text[], $25::bigint[], $26::bigint[])
     ON CONFLICT (consumer) DO UPDATE SET stream_seq = excluded.stream_seq,
       max_seq = GREATEST(consumer_checkpoints.max_seq, excluded.max_seq), updated_at = now()
     RETURNING 1
   )
   SELECT (SELECT count(*) FROM checkpoints) AS checkpoints,
     (SELECT json_agg(json_build_array(s.tenant, s.doc_id, s.through_op_id)) FROM states s) AS states,
     (SELECT json_agg(json_build_array(f.t, f.d, f.m)) FROM input f WHERE f.fenced) AS fenced`

/**
 * Commits the batches of several partitions in ONE statement (data-modifying CTEs run once, to
 * completion, atomically): op-log rows, compacted document states, dead letters and every
 * consumer checkpoint land together or not at all — what makes redelivery exactly-once, in one
 * round trip and one WAL flush per group. A compacted state is marked with the highest op-log id
 * of its document, the ones this statement inserts included (lease.ts: only the owner writes it);
 * resolves with those ids by docKey (a snapshot of the state records it: point-in-time.ts).
 *
 * Fenced (migration 011): no op-log row of an update that came after its document was deleted
 * or before its document or tenant was erased (give or take ERASURE_CLOCK_SKEW_MS: the edge
 * stamps it, PostgreSQL the marks), and no state of a document left without op-log rows or with
 * an update fenced here (the batch applied it in memory). What an erasure removed stays removed
 * when a batch in flight, or a core's memory of the document, would write it back; an update
 * accepted before a soft delete is kept, and a restore shows it.
 */
export async function commitBatches(c: pg.ClientBase, batches: readonly Batch[]): Promise<Committed> {
  const ops = batches.flatMap((b) => b.ops)
  const docs = batches.flatMap((b) => b.docs)
  const dls = batches.flatMap((b) => b.deadLetters)
  // Updates and states travel as one binary parameter each (a bytea[] would go as hex text).
  const updates = concatenated(ops.map((o) => o.update))
  const states = concatenated(docs.map((d) => d.state))
  const r = await c.query<{ states: [string, string, number][] | null; fenced: [string, string, string][] | null }>({
    // Named: parsed and planned once per session, not for every group commit.
    name: 'docflow-commit-batches',
    text: COMMIT_BATCHES_SQL,
    values: [
      ops.map((o) => o.tenant),
      ops.map((o) => o.docId),
      ops.map((o) => o.streamSeq),
      ops.map((o) => o.msgId),
      ops.map((o) => o.userId),
      ops.map((o) => o.edgeId),
      updates.offsets,
      ops.map((o) => o.status),
      ops.map((o) => o.ingestTs),
      docs.map((d) => d.tenant),
      docs.map((d) => d.docId),
      states.offsets,
      docs.map((d) => buf(d.stateVector)),
      docs.map((d) => d.lastStreamSeq),
      docs.map((d) => d.ops),
      dls.map((d) => d.stream),
      dls.map((d) => d.streamSeq),
      dls.map((d) => d.item),
      dls.map((d) => d.subject),
      dls.map((d) => d.tenant),
      dls.map((d) => d.docId),
      dls.map((d) => d.reason),
      dls.map((d) => buf(d.payload)),
      batches.map((b) => b.consumer),
      batches.map((b) => b.streamSeq),
      batches.map((b) => Math.max(b.streamSeq, b.maxSeq ?? 0)),
      updates.blob,
      updates.lengths,
      states.blob,
      states.lengths,
      ops.map((o) => o.eventTs),
      docs.map((d) => d.clientUsers),
    ],
  })
  return {
    through: new Map((r.rows[0]?.states ?? []).map(([tenant, docId, id]) => [docKey(tenant, docId), id])),
    fenced: new Set((r.rows[0]?.fenced ?? []).map(([tenant, docId, msgId]) => fencedKey(tenant, docId, msgId))),
  }
}

/** What a group commit stored, for each batch of it to read its own part from. */
export interface Committed {
  /** The op-log id each compacted state of the commit holds every row through, by docKey. */
  through: ThroughOpIds
  /** Updates not stored because their document is deleted or was erased after they came (fencedKey). */
  fenced: Set<string>
}

/** Key of an op row in Committed.fenced. */
export const fencedKey = (tenant: string, docId: string, msgId: string) => `${docKey(tenant, docId)}\0${msgId}`

/** Consumer name of the rolled-back probes of refusedOps (never committed). */
const PROBE_CONSUMER = 'docflow-refusal-probe'

/**
 * The op rows of `ops` PostgreSQL refuses to store, each with its error: halves of a refused set
 * are stored again in transactions that are rolled back, down to single rows (about log2 of the
 * rows in round trips per refused row). Empty when all of `ops` together store: the refusal was
 * of something else in the batch.
 */
export async function refusedOps(pool: pg.Pool, ops: OpRow[]): Promise<Map<OpRow, string>> {
  const refused = new Map<OpRow, string>()
  const client = await pool.connect()
  try {
    const probe = async (rows: OpRow[]): Promise<void> => {
      const err = await refusal(client, rows)
      if (err === null) return
      if (rows.length === 1) {
        refused.set(rows[0]!, err)
        return
      }
      const half = Math.ceil(rows.length / 2)
      await probe(rows.slice(0, half))
      await probe(rows.slice(half))
    }
    await probe(ops)
  } finally {
    client.release()
  }
  return refused
}

/** PostgreSQL's error when it refuses to store `rows`, else null; nothing stays stored either way. */
async function refusal(client: pg.PoolClient, rows: OpRow[]): Promise<string | null> {
  await client.query('BEGIN')
  try {
    await commitBatches(client, [{ consumer: PROBE_CONSUMER, streamSeq: 0, ops: rows, docs: [], deadLetters: [] }])
    return null
  } catch (err) {
    if (!isRefusedData(err)) throw err
    return (err as Error).message
  } finally {
    await client.query('ROLLBACK')
  }
}

/** The op-log id each compacted state of a commit holds every row through, by docKey. */
export type ThroughOpIds = Map<string, number>

/** Byte strings as one buffer with each one's 1-based offset and length (SQL substring). */
function concatenated(parts: Uint8Array[]): { blob: Buffer; offsets: number[]; lengths: number[] } {
  const offsets: number[] = []
  let at = 1
  for (const p of parts) {
    offsets.push(at)
    at += p.byteLength
  }
  return { blob: Buffer.concat(parts), offsets, lengths: parts.map((p) => p.byteLength) }
}

/**
 * Records a dead letter outside a batch's transaction (a sequence-gap report: the update itself is
 * in the op log); idempotent on (stream, stream_seq, item) like commitBatches.
 */
export async function recordDeadLetter(c: pg.ClientBase | pg.Pool, d: DeadLetterRow): Promise<void> {
  await c.query(
    `INSERT INTO dead_letters (stream, stream_seq, item, subject, tenant, doc_id, reason, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (stream, stream_seq, item) DO NOTHING`,
    [d.stream, d.streamSeq, d.item, d.subject, d.tenant, d.docId, d.reason, buf(d.payload)],
  )
}

/** A document's sequence-gap reports not resolved yet (migration 007). */
export async function openGapReports(c: pg.ClientBase | pg.Pool, tenant: string, docId: string): Promise<DeadLetterKey[]> {
  const r = await c.query<{ stream: string; stream_seq: string; item: number }>(
    `SELECT stream, stream_seq, item FROM dead_letters WHERE tenant = $1 AND doc_id = $2 AND resolved_at IS NULL AND reason LIKE $3`,
    [tenant, docId, `${DeadLetterReason.SequenceGap}:%`],
  )
  return r.rows.map((row) => ({ stream: row.stream, streamSeq: Number(row.stream_seq), item: row.item }))
}

/** Marks a reported dead letter resolved (a sequence gap that filled; migration 007). */
export async function resolveDeadLetter(c: pg.ClientBase | pg.Pool, d: DeadLetterKey): Promise<void> {
  await c.query('UPDATE dead_letters SET resolved_at = now() WHERE stream = $1 AND stream_seq = $2 AND item = $3 AND resolved_at IS NULL', [d.stream, d.streamSeq, d.item])
}
