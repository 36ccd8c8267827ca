import type pg from 'pg'
import { JetStreamApiCodes, type JetStreamManager } from '@nats-io/jetstream'
import { DLQ_STREAM, DocEvent, decodeDeadLetterEvent, docEditSubjects, docSnapshotsPrefix, hasSnapshotKeys, parseSnapshotKey, tenantDeadLetterSubjects, tenantStreamName, type DocNotice } from '../contracts/mod.ts'
import { deleteAll, type BlobStore } from '../runtime/blobs/blob-store.ts'
import { isJetStreamApiError } from '../runtime/nats.ts'
import { inTransaction } from '../runtime/pg-transaction.ts'
import { ensureDeleted, hasDocRows, type DocChange } from './deletion.ts'

// Erasure of one document (a GDPR request): everything DocFlow stored of it goes — op log,
// state and dead letters (docflow_erase, migration 005, with its audit row), snapshot rows and
// blobs, its raw messages in JetStream — and no running process keeps or writes back a copy.
//
// Invariants:
// - the document is deleted (hidden, core/deletion.ts) before anything is removed and stays
//   deleted: edges close its rooms and refuse it (CloseCode.DocumentDeleted), so a client that
//   still holds its content cannot sync it back in; a restore shows an empty document;
// - every removal is audited: the erasures row (actor, reason, rows per table), and the counts
//   of snapshot blobs and stream messages this returns for the caller to print and log;
// - nothing writes it back (migration 011): a commit stores no update of a deleted document, or
//   of one erased after the update came, and no state of a document without op-log rows; cores
//   also drop their in-memory copy on the erased notice. A commit whose statement started before
//   the deletion mark could not see it: once the rows are gone, the erasure waits for every
//   commit in flight (writeBarrier), looks again and erases what such a commit wrote (a
//   second audited erasure).
//
// Raw messages: in AGG (the service account's aggregate stream) the messages that carried the
// document's updates — the op log and dead letters name their sequences — are deleted by
// sequence (an edge batches a partition's updates, so such a message may carry other
// documents' updates too: they are committed already, and the tenant stream keeps its copy), and
// single-update messages of the document not committed yet are purged by subject. A tenant
// stream is created with deny_purge and deny_delete (no one, its tenant included, may edit the
// record; JetStream cannot lift either later), so its copies are reported and leave with the
// stream's max_age (contracts/streams.ts EDIT_STREAM_MAX_AGE_MS).
//
// What can be erased: a document with rows (op log, state, dead letters, snapshots), a delete or
// restore in its history (a rerun after the rows went), snapshot blobs whose row never landed, or
// single-update messages in AGG core has not committed yet (HTTP ingest while core is behind):
// each holds content. Anything else is refused before the deletion mark, which nothing lifts, so
// a mistyped id is not hidden for good. Socket edits of a brand-new document still waiting in
// AGG travel in partition batches, seen only by reading the partition's backlog: that erasure is
// refused until core commits them.

export interface ErasureStores {
  pool: pg.Pool
  blobs: BlobStore
  /** The service account's JetStream (AGG). */
  aggJsm: JetStreamManager
  /** AGG's name (contracts AGG_STREAM). */
  aggStream: string
  /** The tenant account's JetStream (its edit stream); null when not reachable. */
  tenantJsm: JetStreamManager | null
  /** Publishes a document notice to every edge and core (ServiceSubjects.docNotice). */
  notify: (notice: DocNotice) => Promise<void>
  /** Told how far the one-request-per-item steps are (see ErasureProgress). Default none. */
  progress?: (progress: ErasureProgress) => void
  /** Least time between two progress reports of a step. Default 1_000. */
  progressIntervalMs?: number
}

/**
 * A step that takes a request per item or per batch (AGG messages deleted by sequence, snapshot
 * blobs 1,000 at a time), which a large document makes long: reported at most every
 * progressIntervalMs, and at its end when it was reported before.
 */
export interface ErasureProgress {
  step: 'agg-messages' | 'snapshot-blobs'
  done: number
  total: number
}

/** What happened to one stream's copies of the document. */
export interface StreamErasure {
  stream: string
  /** Messages removed. */
  removed: number
  /** Why some copies stay (refused by the stream's settings), when they do. */
  kept?: string
}

export interface ErasureReport {
  tenant: string
  docId: string
  /** The erasures rows written (a second when the document reappeared after the notice). */
  erasureIds: number[]
  /** Rows removed per table (op_log, docs, dead_letters, snapshots), over every pass. */
  rowsRemoved: Record<string, number>
  snapshotBlobsDeleted: number
  streams: StreamErasure[]
  /** The document was not deleted before: the erasure marked it. */
  markedDeleted: boolean
  /** Rows a commit in flight wrote after the first pass, erased by the second. */
  rewrittenRows: number
}

const DEFAULT_PROGRESS_INTERVAL_MS = 1_000
/** How long the read of a tenant's dead letters waits for the next one before it is done. */
const DLQ_FETCH_EXPIRES_MS = 2_000

/**
 * Erases one document everywhere (see above). Throws DocDeletionError (not-found) when nothing of
 * it is stored, and when a step fails; rerunning finishes it (every step is idempotent).
 */
export async function eraseDocument(stores: ErasureStores, change: DocChange): Promise<ErasureReport> {
  const { tenant, docId } = change
  const storedElsewhere = (await hasSnapshotBlobs(stores.blobs, tenant, docId)) || (await hasAggMessages(stores, tenant, docId))
  const markedDeleted = await ensureDeleted(stores.pool, { ...change, reason: `erase: ${change.reason}` }, storedElsewhere)
  await stores.notify({ tenant, docId, event: DocEvent.Deleted })
  const first = await eraseRows(stores.pool, stores.aggStream, change)
  const report: ErasureReport = { tenant, docId, erasureIds: [first.id], rowsRemoved: first.rows, snapshotBlobsDeleted: 0, streams: [], markedDeleted, rewrittenRows: 0 }
  report.snapshotBlobsDeleted += await deleteSnapshotBlobs(stores, tenant, docId, first.snapshotKeys)
  report.streams = await eraseRawMessages(stores, tenant, docId, first.streamSeqs)
  await messagesDeleted(stores.pool, first.id)
  await stores.notify({ tenant, docId, event: DocEvent.Erased })
  await writeBarrier(stores.pool)
  if (await hasDocRows(stores.pool, tenant, docId, ['op_log', 'docs', 'dead_letters', 'snapshots'])) {
    const again = await eraseRows(stores.pool, stores.aggStream, { ...change, reason: `${change.reason} (written back by a batch in flight)` })
    report.erasureIds.push(again.id)
    for (const [table, n] of Object.entries(again.rows)) {
      report.rowsRemoved[table] = (report.rowsRemoved[table] ?? 0) + n
      report.rewrittenRows += n
    }
    report.snapshotBlobsDeleted += await deleteSnapshotBlobs(stores, tenant, docId, again.snapshotKeys)
    const aggAgain = await deleteAggMessages(stores, again.streamSeqs)
    await messagesDeleted(stores.pool, again.id)
    const agg = report.streams.find((s) => s.stream === stores.aggStream)
    if (agg) agg.removed += aggAgain
  } else {
    // A blob whose row never landed (its writer failed or was taken back midway).
    report.snapshotBlobsDeleted += await deleteSnapshotBlobs(stores, tenant, docId, [])
  }
  // Last: core publishes a dead letter after committing it, the second look's included.
  report.streams.push(await eraseDeadLetterCopies(stores, tenant, docId))
  return report
}

/** How often writeBarrier looks whether the commits it waits for have ended. */
const BARRIER_POLL_MS = 20

/**
 * Returns once every transaction that was writing the op log when it was called has ended
 * (migration 011): a commit statement that started before a deletion mark or an erasures row did
 * not see it. A commit takes its lock before its snapshot, so every such commit holds one now.
 * Watches pg_locks rather than queueing a lock of its own: a lock request waiting behind a long
 * holder (a vacuum, another erasure's transaction) would hold every later commit up behind it.
 */
export async function writeBarrier(db: pg.Pool | pg.ClientBase): Promise<void> {
  const writers = (c: { text: string; values: unknown[] }) => db.query<{ v: string }>(c).then((r) => r.rows.map((row) => row.v))
  let waiting = await writers({
    text: "SELECT DISTINCT virtualtransaction AS v FROM pg_locks WHERE relation = 'op_log'::regclass AND mode = 'RowExclusiveLock' AND granted AND pid <> pg_backend_pid()",
    values: [],
  })
  while (waiting.length > 0) {
    await new Promise((resolve) => setTimeout(resolve, BARRIER_POLL_MS))
    waiting = await writers({ text: "SELECT DISTINCT virtualtransaction AS v FROM pg_locks WHERE relation = 'op_log'::regclass AND virtualtransaction = ANY($1)", values: [waiting] })
  }
}

interface RowsErased {
  id: number
  rows: Record<string, number>
  snapshotKeys: string[]
  /** AGG sequences of the messages that carried the document's updates, and those an earlier run could not delete. */
  streamSeqs: number[]
}

/**
 * docflow_erase and the snapshot rows, in one transaction; the AGG sequences are read first, in
 * it, with those an earlier run left pending, and are kept pending (migration 012) until
 * messagesDeleted: a run that fails before then leaves them to its rerun.
 */
async function eraseRows(pool: pg.Pool, stream: string, change: DocChange): Promise<RowsErased> {
  const c = await pool.connect()
  try {
    return await inTransaction(c, 'erasure', async () => {
      const seqs = await c.query<{ s: string }>(
        `SELECT stream_seq AS s FROM op_log WHERE tenant = $1 AND doc_id = $2
         UNION SELECT stream_seq FROM dead_letters WHERE tenant = $1 AND doc_id = $2
         UNION SELECT unnest(seqs) FROM erasure_pending_messages WHERE tenant = $1 AND doc_id = $2 AND stream = $3`,
        [change.tenant, change.docId, stream],
      )
      const erased = await c.query<{ id: string; rows_removed: Record<string, number> }>('SELECT id, rows_removed FROM docflow_erase($1, $2, $3, $4)', [change.tenant, change.docId, change.reason, change.actor])
      const snaps = await c.query<{ blob_key: string }>('DELETE FROM snapshots WHERE tenant = $1 AND doc_id = $2 RETURNING blob_key', [change.tenant, change.docId])
      const row = erased.rows[0]!
      const streamSeqs = seqs.rows.map((r) => Number(r.s))
      await c.query('DELETE FROM erasure_pending_messages WHERE tenant = $1 AND doc_id = $2 AND stream = $3', [change.tenant, change.docId, stream])
      if (streamSeqs.length > 0) await c.query('INSERT INTO erasure_pending_messages (erasure_id, tenant, doc_id, stream, seqs) VALUES ($1, $2, $3, $4, $5)', [row.id, change.tenant, change.docId, stream, streamSeqs])
      return { id: Number(row.id), rows: { ...row.rows_removed, snapshots: snaps.rowCount ?? 0 }, snapshotKeys: snaps.rows.map((r) => r.blob_key), streamSeqs }
    })
  } finally {
    c.release()
  }
}

/** The messages eraseRows kept pending under erasure `id` are deleted. */
async function messagesDeleted(pool: pg.Pool, id: number): Promise<void> {
  await pool.query('DELETE FROM erasure_pending_messages WHERE erasure_id = $1', [id])
}

/** The blobs the rows named and any other snapshot of the document (a put whose row never landed). */
async function deleteSnapshotBlobs(stores: ErasureStores, tenant: string, docId: string, keys: string[]): Promise<number> {
  const all = new Set(keys)
  for await (const key of snapshotBlobsOf(stores.blobs, tenant, docId)) all.add(key)
  const deleted = await deleteAll(stores.blobs, all, progressOf(stores, 'snapshot-blobs', all.size))
  // Not recursive: a longer id's snapshots can lie in a subfolder (snapshotBlobsOf).
  return deleted + (hasSnapshotKeys(tenant, docId) ? await stores.blobs.deleteLeftovers(docSnapshotsPrefix(tenant, docId), false) : 0)
}

async function hasSnapshotBlobs(blobs: BlobStore, tenant: string, docId: string): Promise<boolean> {
  for await (const _ of snapshotBlobsOf(blobs, tenant, docId)) return true
  return false
}

/**
 * The document's snapshot blobs. Its prefix's listing may hold other documents' snapshots: an id
 * whose path passes one key segment continues a shorter id's folder ("<A's path>/~51"), so only
 * keys of this id count.
 */
async function* snapshotBlobsOf(blobs: BlobStore, tenant: string, docId: string): AsyncGenerator<string> {
  if (!hasSnapshotKeys(tenant, docId)) return
  for await (const key of blobs.list(docSnapshotsPrefix(tenant, docId))) if (snapshotOf(key) === docId) yield key
}

/** AGG holds single-update messages of the document (by subject; partition batches are not seen). */
async function hasAggMessages(stores: ErasureStores, tenant: string, docId: string): Promise<boolean> {
  const { state } = await stores.aggJsm.streams.info(stores.aggStream, { subjects_filter: docEditSubjects(tenant, docId) })
  return Object.keys(state.subjects ?? {}).length > 0
}

function snapshotOf(key: string): string | null {
  try {
    return parseSnapshotKey(key).docId
  } catch {
    return null // not a snapshot key: not ours to delete
  }
}

/**
 * The document's dead letters on DLQ_STREAM (each holds an update's bytes), deleted by sequence:
 * found by reading the tenant's dead letters (a subject names tenant and reason, not the document).
 */
async function eraseDeadLetterCopies(stores: ErasureStores, tenant: string, docId: string): Promise<StreamErasure> {
  const filter = tenantDeadLetterSubjects(tenant)
  const { state } = await stores.aggJsm.streams.info(DLQ_STREAM, { subjects_filter: filter })
  const erasure = { stream: DLQ_STREAM, removed: 0 }
  if (Object.keys(state.subjects ?? {}).length === 0) return erasure
  const seqs: number[] = []
  const consumer = await stores.aggJsm.jetstream().consumers.get(DLQ_STREAM, { filter_subjects: filter })
  try {
    // Up to what the stream held at the start; a message gone meanwhile (aged out, purged) leaves
    // a gap, so an empty fetch ends it too rather than waiting for what will not come.
    for (let m = await consumer.next({ expires: DLQ_FETCH_EXPIRES_MS }); m; m = m.seq >= state.last_seq ? null : await consumer.next({ expires: DLQ_FETCH_EXPIRES_MS })) {
      if (deadLetterDocOf(m.data) === docId) seqs.push(m.seq)
    }
  } finally {
    await consumer.delete().catch(() => undefined) // an ordered consumer goes with its inactivity anyway
  }
  for (const seq of seqs) if (await deleteStreamMessage(stores.aggJsm, DLQ_STREAM, seq)) erasure.removed++
  return erasure
}

function deadLetterDocOf(data: Uint8Array): string | null {
  try {
    return decodeDeadLetterEvent(data).docId
  } catch {
    return null // not a dead letter of ours: not this document's
  }
}

async function eraseRawMessages(stores: ErasureStores, tenant: string, docId: string, seqs: number[]): Promise<StreamErasure[]> {
  const subjects = docEditSubjects(tenant, docId)
  const agg = { stream: stores.aggStream, removed: await deleteAggMessages(stores, seqs) }
  // Purges do not propagate from a source to AGG (NATS-TENANCY pitfall 4): each stream on its own.
  agg.removed += (await stores.aggJsm.streams.purge(stores.aggStream, { filter: subjects })).purged
  const name = tenantStreamName(tenant)
  if (!stores.tenantJsm) return [agg, { stream: name, removed: 0, kept: 'tenant account not reachable; its copies leave with the stream max_age' }]
  try {
    const purged = await stores.tenantJsm.streams.purge(name, { filter: subjects })
    return [agg, { stream: name, removed: purged.purged, kept: 'updates sent in partition batches (every socket edit) stay until the stream max_age' }]
  } catch (err) {
    return [agg, { stream: name, removed: 0, kept: `${(err as Error).message}: the stream refuses purges and deletes (deny_purge, deny_delete); its copies leave with the stream max_age` }]
  }
}

/** Deletes (overwriting) the AGG messages at `seqs`; a message already gone (aged out, deleted) is not counted. */
async function deleteAggMessages(stores: ErasureStores, seqs: number[]): Promise<number> {
  if (seqs.length === 0) return 0
  const { state } = await stores.aggJsm.streams.info(stores.aggStream)
  const held = (seq: number) => state.messages > 0 && seq >= state.first_seq && seq <= state.last_seq
  const tick = progressOf(stores, 'agg-messages', seqs.length)
  let removed = 0
  let done = 0
  for (const seq of seqs) {
    if (held(seq) && (await deleteStreamMessage(stores.aggJsm, stores.aggStream, seq))) removed++
    tick(++done)
  }
  return removed
}

/** nats-server's err_code for a sequence inside the stream whose message is gone (deleted, or purged by subject). */
const SEQUENCE_NOT_FOUND = 10043

/** False when the message is gone already: the first look's purge of the document's subjects takes single-update messages a second look then names. */
async function deleteStreamMessage(jsm: JetStreamManager, stream: string, seq: number): Promise<boolean> {
  try {
    return await jsm.streams.deleteMessage(stream, seq, true)
  } catch (err) {
    if (!isJetStreamApiError(err, JetStreamApiCodes.NoMessageFound) && !isJetStreamApiError(err, SEQUENCE_NOT_FOUND) && !/no message found/i.test((err as Error).message)) throw err
    return false
  }
}

/** A step's progress reporter: call it with the items done so far (see ErasureProgress). */
function progressOf(stores: ErasureStores, step: ErasureProgress['step'], total: number): (done: number) => void {
  const intervalMs = stores.progressIntervalMs ?? DEFAULT_PROGRESS_INTERVAL_MS
  let lastAt = Date.now()
  let reported = false
  return (done) => {
    if (!stores.progress) return
    const now = Date.now()
    if (now - lastAt < intervalMs && !(done === total && reported)) return
    stores.progress({ step, done, total })
    lastAt = now
    reported = true
  }
}
