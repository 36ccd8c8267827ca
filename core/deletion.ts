import type pg from 'pg'
import { DocDeletionError } from './errors.ts'
import { inTransaction } from '../runtime/pg-transaction.ts'

// Soft deletion of documents (migration 008): a deleted document is hidden — the read API
// answers 404 for its views, edges refuse to open it (CloseCode.DocumentDeleted) — and nothing
// of it is removed, so a restore shows it again whole.
//
// Invariant: a document is deleted exactly when its newest doc_deletions row says 'delete';
// every delete and restore is one appended row naming who asked and why (the audit history).
// Edits already in flight when a document is deleted (a socket mid-update, HTTP ingest) are
// still committed to the op log: the log is the record, and a restore shows them too.

/** Who asked for a change of a document and why, as the audit history keeps it. */
export interface DocChange {
  tenant: string
  docId: string
  actor: string
  reason: string
}

/** One row of a document's delete/restore history. */
export interface DeletionRecord extends DocChange {
  id: number
  action: 'delete' | 'restore'
  dbUser: string
  at: Date
}

type Db = pg.Pool | pg.ClientBase

/** True when the document's newest delete/restore is a delete. One indexed lookup. */
export async function isDocDeleted(db: Db, tenant: string, docId: string): Promise<boolean> {
  const r = await db.query<{ action: string }>('SELECT action FROM doc_deletions WHERE tenant = $1 AND doc_id = $2 ORDER BY id DESC LIMIT 1', [tenant, docId])
  return r.rows[0]?.action === 'delete'
}

/** Hides a document. Throws DocDeletionError when the tenant has no such document or it is deleted already. */
export function deleteDocument(pool: pg.Pool, change: DocChange): Promise<DeletionRecord> {
  return record(pool, change, 'delete', async (c) => {
    if (await isDocDeleted(c, change.tenant, change.docId)) throw new DocDeletionError(`document ${change.docId} of ${change.tenant} is already deleted`, 'already-deleted')
    // A state or op-log rows.
    if (!(await hasDocRows(c, change.tenant, change.docId, ['docs', 'op_log']))) throw new DocDeletionError(`tenant ${change.tenant} has no document ${change.docId}`, 'not-found')
  })
}

/** Shows a deleted document again, with everything it had. Throws DocDeletionError when it is not deleted. */
export function restoreDocument(pool: pg.Pool, change: DocChange): Promise<DeletionRecord> {
  return record(pool, change, 'restore', async (c) => {
    if (!(await isDocDeleted(c, change.tenant, change.docId))) throw new DocDeletionError(`document ${change.docId} of ${change.tenant} is not deleted`, 'not-deleted')
  })
}

/**
 * Marks a document deleted unless it is already (an erasure keeps it deleted); true when this call
 * marked it. Throws DocDeletionError (not-found) when PostgreSQL holds nothing of it — no rows, no
 * delete/restore history — unless `storedElsewhere` (the caller found copies outside it): the
 * mark is never undone by anyone, so marking a mistyped id would hide that id's future edits.
 */
export async function ensureDeleted(pool: pg.Pool, change: DocChange, storedElsewhere = false): Promise<boolean> {
  let marked = false
  await record(pool, change, 'delete', async (c) => {
    if (await isDocDeleted(c, change.tenant, change.docId)) throw new Skip()
    // Rows in any table, or a delete/restore history (an erasure rerun after its rows went).
    if (!storedElsewhere && !(await hasDocRows(c, change.tenant, change.docId, ['op_log', 'docs', 'dead_letters', 'snapshots', 'doc_deletions']))) throw new DocDeletionError(`tenant ${change.tenant} has no document ${change.docId}`, 'not-found')
    marked = true
  }).catch((err: unknown) => {
    if (!(err instanceof Skip)) throw err
  })
  return marked
}

/** Tables that hold something of a document, by tenant and doc_id. */
export type DocTable = 'op_log' | 'docs' | 'dead_letters' | 'snapshots' | 'doc_deletions'

/** True when any of `tables` has a row of the document. */
export async function hasDocRows(db: Db, tenant: string, docId: string, tables: readonly DocTable[]): Promise<boolean> {
  const r = await db.query<{ found: boolean }>(`SELECT ${tables.map((t) => `EXISTS (SELECT 1 FROM ${t} WHERE tenant = $1 AND doc_id = $2)`).join(' OR ')} AS found`, [tenant, docId])
  return r.rows[0]!.found
}

/** Nothing to record (ensureDeleted of a deleted document); never leaves this file. */
class Skip extends Error {
  override name = 'Skip'
}

/**
 * Checks and appends one history row in a transaction that holds the document's advisory lock,
 * so two concurrent deletes cannot both pass the check.
 */
async function record(pool: pg.Pool, change: DocChange, action: 'delete' | 'restore', check: (c: pg.PoolClient) => Promise<void>): Promise<DeletionRecord> {
  const c = await pool.connect()
  try {
    return await inTransaction(c, 'document deletion change', async () => {
      await c.query('SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))', [change.tenant, change.docId])
      await check(c)
      const r = await c.query<{ id: string; db_user: string; at: Date }>(
        'INSERT INTO doc_deletions (tenant, doc_id, action, actor, reason) VALUES ($1, $2, $3, $4, $5) RETURNING id, db_user, at',
        [change.tenant, change.docId, action, change.actor, change.reason],
      )
      const row = r.rows[0]!
      return { ...change, id: Number(row.id), action, dbUser: row.db_user, at: row.at }
    })
  } finally {
    c.release()
  }
}
