import { createHash } from 'node:crypto'
import type pg from 'pg'
import * as Y from 'yjs'
import { HTTP_INGEST_PATH, RollbackRequest, editMsgId, type RollbackAnswer } from '../contracts/mod.ts'
import type { BlobStore } from '../runtime/blobs/blob-store.ts'
import type { Logger } from '../runtime/log.ts'
import { docRows } from './op-log-rows.ts'
import { forEachSliced, parsePointInTime, readStateAt, type StateAt } from './point-in-time.ts'

/**
 * Rollback as a NEW Yjs update, computed here and sent through the normal edit path.
 *
 * How the update is computed: Yjs cannot undelete, so restoring means re-inserting copies of
 * deleted content at the place it was, and deleting what was added since — exactly what
 * Y.UndoManager does. The document is rebuilt as it was at the rollback's start point
 * (readStateAt: snapshot + op log), an UndoManager (scope: the whole doc, one stack item) is
 * attached, the op-log rows after that point are replayed (the tracked ones with a tracked
 * origin), and one undo yields the update:
 *  - `{to}`: every row after the point is tracked, so the undo deletes every item inserted since
 *    and re-inserts every item deleted since: the content is the content at `to`;
 *  - `{user, since}`: only that user's rows ingested after `since` are tracked, so the undo
 *    deletes that user's items still alive and re-inserts what that user deleted; other users'
 *    edits stay.
 * A rollback is itself an update like any other, so a rollback to the sequence before it undoes it.
 * A rollback that would leave every root reading as it does now (a retry after the first landed,
 * or nothing of the user's left to revert) sends nothing: 'unchanged'.
 * Limits (UndoManager's): text and array items come back where they were; a Y.Map key another
 * (untracked) user wrote since is left as they wrote it; an item still pending in the op log
 * (its dependencies never arrived) is not reverted. Cost: replaying the rows
 * after the point — bounded by the point's age, not by the document's (75K one-character
 * updates, a delete in four: 2.1 s on the 2-core dev box, state?at= 1.4 s for the same rows),
 * letting the event loop run every few ms (forEachSliced, RowRun); the final undo is one
 * synchronous step.
 *
 * Why through the edge's HTTP ingest (POST /v1/docs/<docId>/updates) with the CALLER's token:
 * it is the path every client edit takes — the edge checks the token (editor, document allowed,
 * tenant active), applies the tenant's limits, publishes to the tenant's subject with a tenant
 * message id (so JetStream dedups a retry), fans the update out to the document's live clients on
 * every edge, and core commits it to the op log attributed to the token's `sub`. Publishing from
 * core instead would duplicate all of that, and core's NATS user cannot publish edits by design
 * (NATS-TENANCY.md). The Idempotency-Key and the rollback's Yjs client id derive from the request
 * and the document's last sequence, so a retried request against the same state is the same
 * update and lands once.
 */

export interface RollbackTarget {
  tenant: string
  docId: string
  /** The caller's token `sub` and the token itself (sent on to the edge). */
  user: string
  token: string
  /** The document's last applied stream sequence, read before the rollback is computed. */
  basedOnSeq: number
}

export interface RollbackDeps {
  pool: pg.Pool
  blobs: BlobStore
  /** Base URL of an edge's HTTP ingest, e.g. http://127.0.0.1:8080; null: rollback is off. */
  edgeUrl: string | null
  /** How long the edge may take to store the update. */
  edgeTimeoutMs: number
  log: Logger
}

/** An HTTP status and the JSON body to answer with. */
export interface RollbackResult {
  status: number
  body: RollbackAnswer | { error: string }
}

/** Tracked origin of the replayed rows the rollback undoes; the others replay under UNTRACKED. */
const TRACKED = Symbol('rollback-tracked')
const UNTRACKED = Symbol('rollback-untracked')

/** Parses the body, computes the rollback update and has the edge store it. */
export async function rollback(deps: RollbackDeps, target: RollbackTarget, body: Buffer): Promise<RollbackResult> {
  if (!deps.edgeUrl) return { status: 503, body: { error: 'rollback is not configured on this core (CORE_EDGE_URL)' } }
  let json: unknown
  try {
    json = JSON.parse(body.toString('utf8'))
  } catch {
    return { status: 400, body: { error: 'body must be JSON: {"to": "<ISO time | seq>"} or {"user": "<sub>", "since": "<ISO time>"}' } }
  }
  const parsed = RollbackRequest.safeParse(json)
  if (!parsed.success) return { status: 400, body: { error: `body must be {"to": "<ISO time with zone | stream seq>"} or {"user": "<sub>", "since": "<ISO time with zone>"}: ${parsed.error.issues.map((i) => i.message).join('; ')}` } }
  const planned = await planUpdate(deps.pool, deps.blobs, target, parsed.data)
  if ('error' in planned) return { status: 422, body: planned }
  if (!planned.update) return { status: 202, body: { status: 'unchanged', basedOnSeq: target.basedOnSeq, bytes: 0 } }
  const { update, key } = planned
  const stored = await sendToEdge(deps, target, update, key)
  if ('error' in stored) return { status: stored.status, body: { error: stored.error } }
  const msgId = editMsgId(target.tenant, target.docId, update)
  return { status: 202, body: { status: 'accepted', basedOnSeq: target.basedOnSeq, msgId, duplicate: stored.duplicate, bytes: update.byteLength, idempotencyKey: key } }
}

/**
 * The rollback update (null: nothing to revert) and its idempotency key, or why there is none to
 * compute. Both follow from what the rollback does — the document, the sequence it is based on,
 * the state it restores or the user and time it reverts — never from who asked or how the
 * request spelled it: two editors restoring the same point at once send the same update (same
 * Yjs client id, same clocks), which applies once; two different updates would each re-insert
 * the deleted text.
 */
async function planUpdate(pool: pg.Pool, blobs: BlobStore, target: RollbackTarget, request: RollbackRequest): Promise<{ update: null } | { update: Uint8Array; key: string } | { error: string }> {
  const { tenant, docId, basedOnSeq } = target
  let since: Date | null = null
  let base: StateAt | null
  if ('to' in request) {
    const point = parsePointInTime(String(request.to))
    if (!point) return { error: 'to takes an ISO 8601 time or a stream sequence' }
    base = await readStateAt(pool, blobs, tenant, docId, point)
    if (!base) return { error: 'the document had no update by then; nothing to restore' }
  } else {
    since = new Date(request.since)
    // The base is the state before the first row ingested after `since`, not the last row
    // ingested before it: edges' clocks differ by a few ms, so ingest times are not in stream
    // order, and a row after the base stamped before `since` replays untracked. A document begun
    // after `since` is reverted from its start.
    const first = await pool.query<{ seq: string | null }>('SELECT min(stream_seq) AS seq FROM op_log WHERE tenant = $1 AND doc_id = $2 AND ingest_ts > $3 AND stream_seq <= $4', [tenant, docId, since, basedOnSeq])
    const firstAfter = first.rows[0]?.seq
    if (firstAfter === null || firstAfter === undefined) return { update: null }
    base = Number(firstAfter) > 1 ? await readStateAt(pool, blobs, tenant, docId, { seq: Number(firstAfter) - 1 }) : null
  }
  const user = 'user' in request ? request.user : null
  const tracked = (row: { user: string; ingestTs: Date }) => since === null || (row.user === user && row.ingestTs > since)
  const doc = new Y.Doc()
  try {
    if (base) Y.applyUpdate(doc, base.update, UNTRACKED)
    const undo = new Y.UndoManager(doc, { captureTimeout: Number.POSITIVE_INFINITY, trackedOrigins: new Set([TRACKED]) })
    // A transaction's origin decides whether the undo tracks it. One per run of rows alike, not
    // per row: the undo merges each tracked transaction's deletes into all it holds, so a
    // transaction per row cost time quadratic in the rows (75K typed rows: 14.7 s, against 1.3 s
    // for state?at= replaying them).
    const run = new RowRun(doc)
    await forEachSliced(docRows(pool, tenant, docId, { afterSeq: base?.seq ?? 0, afterTime: base?.time, uptoSeq: basedOnSeq }), (row) => run.add(row.update, tracked(row) ? TRACKED : UNTRACKED))
    run.apply()
    if (undo.undoStack.length === 0) return { update: null }
    const current = visibleContent(doc)
    const hash = createHash('sha256').update(JSON.stringify([tenant, docId, basedOnSeq, base?.seq ?? null, user, since?.toISOString() ?? null, ...(base?.time ? [base.time] : [])])).digest()
    doc.clientID = freshClientId(doc, hash.readUInt32BE(18))
    const updates: Uint8Array[] = []
    doc.on('update', (update: Uint8Array, origin: unknown) => {
      if (origin === undo) updates.push(update)
    })
    while (undo.undoStack.length > 0) undo.undo()
    if (updates.length === 0 || visibleContent(doc) === current) return { update: null }
    return { update: Y.mergeUpdates(updates), key: `rollback-${hash.subarray(0, 18).toString('base64url')}` }
  } finally {
    doc.destroy()
  }
}

/** Rows, and their bytes, applied together at most: a run is about a slice of work (point-in-time.ts), applied in one step. */
const MAX_RUN_ROWS = 256
const MAX_RUN_BYTES = 256 * 1024

/** Consecutive op-log rows of one origin, applied in one transaction (in stream order with the others). */
class RowRun {
  private updates: Uint8Array[] = []
  private bytes = 0
  private origin: symbol = UNTRACKED

  constructor(private readonly doc: Y.Doc) {}

  add(update: Uint8Array, origin: symbol): void {
    if (origin !== this.origin || this.updates.length === MAX_RUN_ROWS || this.bytes >= MAX_RUN_BYTES) this.apply()
    this.origin = origin
    this.updates.push(update)
    this.bytes += update.byteLength
  }

  apply(): void {
    if (this.updates.length === 0) return
    const updates = this.updates
    this.updates = []
    this.bytes = 0
    Y.transact(this.doc, () => updates.forEach((u) => Y.applyUpdate(this.doc, u)), this.origin)
  }
}

/**
 * What the document's roots read as, whatever their kind, as one string: live sequence content
 * (adjacent text joined, so items split or copied differently read the same), formatting marks,
 * live map entries, nested types recursively.
 */
function visibleContent(doc: Y.Doc): string {
  const read = (type: { _start: Y.Item | null; _map: Map<string, Y.Item> }): unknown => {
    const sequence: unknown[] = []
    for (let item = type._start; item !== null; item = item.right) {
      if (item.deleted) continue
      const c = item.content
      if (c instanceof Y.ContentString && typeof sequence.at(-1) === 'string') sequence[sequence.length - 1] += c.str
      else if (c instanceof Y.ContentString) sequence.push(c.str)
      else if (c instanceof Y.ContentFormat) sequence.push({ format: c.key, value: c.value })
      else sequence.push(...c.getContent().map((v) => (v instanceof Y.AbstractType ? read(v) : v)))
    }
    const entries: [string, unknown][] = []
    for (const [key, item] of type._map) if (!item.deleted) entries.push([key, item.content.getContent().map((v) => (v instanceof Y.AbstractType ? read(v) : v))])
    return { sequence, entries: entries.sort(([a], [b]) => (a < b ? -1 : 1)) }
  }
  return JSON.stringify([...doc.share.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([name, type]) => [name, read(type)]))
}

/** A Yjs client id the document has never seen, derived from the request (a retry gets the same one). */
function freshClientId(doc: Y.Doc, seed: number): number {
  let id = seed
  while (id === 0 || doc.store.clients.has(id)) id = (Math.imul(id ^ (id >>> 16), 0x45d9f3b) >>> 0) + 1
  return id
}

/** Maps an edge refusal onto this API's answer: the caller's own refusals pass through, the rest is a retry. */
const EDGE_STATUS: Record<number, number> = { 400: 422, 401: 401, 403: 403, 413: 413, 429: 429 }

/** Has the edge store the update as the caller's edit; whether JetStream had it already. */
async function sendToEdge(deps: RollbackDeps, target: RollbackTarget, update: Uint8Array, key: string): Promise<{ duplicate: boolean } | { status: number; error: string }> {
  const url = `${deps.edgeUrl!.replace(/\/$/, '')}${HTTP_INGEST_PATH}/${encodeURIComponent(target.docId)}/updates`
  let res: Response
  try {
    res = await fetch(url, {
      method: 'POST',
      body: update as BodyInit,
      headers: { authorization: `Bearer ${target.token}`, 'idempotency-key': key, 'content-type': 'application/octet-stream' },
      signal: AbortSignal.timeout(deps.edgeTimeoutMs),
    })
  } catch (err) {
    deps.log.warn({ err, tenant: target.tenant, docId: target.docId, url }, 'rollback update not sent to the edge')
    return { status: 503, error: 'the edge did not take the rollback update; retry' }
  }
  const answer = (await res.json().catch(() => ({}))) as { duplicate?: boolean; error?: string }
  if (res.status === 202) return { duplicate: answer.duplicate === true }
  deps.log.warn({ tenant: target.tenant, docId: target.docId, status: res.status, error: answer.error }, 'edge refused a rollback update')
  const status = EDGE_STATUS[res.status] ?? 503
  return { status, error: `the edge refused the rollback update (${res.status}: ${answer.error ?? 'no reason'})${status === 503 ? '; retry' : ''}` }
}
