// A removed tenant's data in PostgreSQL and the blob store (scripts/lib/provisioner.ts remove), and
// when its name may be given again.
import pg from 'pg'
import { hostname } from 'node:os'
import { tenantSnapshotsPrefix } from '../../contracts/mod.ts'
import { deleteAll, type BlobStore } from '../../runtime/blobs/blob-store.ts'
import { inTransaction } from '../../runtime/pg-transaction.ts'
import { writeBarrier } from '../../core/erasure.ts'
import { ERASURE_CLOCK_SKEW_MS } from '../../core/erasure-watch.ts'

/** PostgreSQL's SQLSTATE for a function that does not exist. */
const UNDEFINED_FUNCTION = '42883'

/**
 * The audited erasure of the tenant's rows (op log, state, dead letters, snapshot rows, deletion
 * history). A commit in flight as they went could not see the erasure (its statement started
 * before): once every such commit has ended (writeBarrier), what it wrote is erased too, in a
 * second audited erasure. Later commits are fenced (core migration 011).
 */
export async function eraseTenantRows(databaseUrl: string, tenant: string, erasure: { actor?: string; reason?: string }, say: (line: string) => void): Promise<void> {
  const db = new pg.Client(databaseUrl)
  await db.connect()
  try {
    const actor = erasure.actor ?? `provisioner@${hostname()}`
    const reason = erasure.reason ?? 'tenant removed'
    const erase = (why: string) =>
      inTransaction(db, 'erasure', async () => {
        const r = await db.query<{ id: string; rows_removed: Record<string, number> }>('SELECT id, rows_removed FROM docflow_erase($1, NULL, $2, $3)', [tenant, why, actor]).catch((err: unknown) => {
          if ((err as { code?: string }).code !== UNDEFINED_FUNCTION) throw err
          throw new Error('this database has no audited erasure yet (core migration 005_immutable_op_log): start core once to migrate it, then remove again', { cause: err })
        })
        const { id, rows_removed: removed } = r.rows[0]!
        // An erasure from before migration 009 leaves the snapshot rows and deletion history:
        // erase nothing rather than half.
        if (!('snapshots' in removed)) throw new Error('this database\'s erasure keeps snapshots (core migration 009_tenant_erasure is not applied): start core once to migrate it, then remove again')
        // The AGG messages of its documents' failed erasures went with the tenant's purge (provisioner.ts remove).
        // (The table comes with core migration 012; a database not migrated that far has none.)
        if (await hasTable(db, 'erasure_pending_messages')) await db.query('DELETE FROM erasure_pending_messages WHERE tenant = $1', [tenant])
        return { id, removed }
      })
    const said = ({ id, removed }: { id: string; removed: Record<string, number> }) =>
      say(`erasure ${id} deleted ${Object.entries(removed).map(([table, n]) => `${n} rows from ${table}`).join(', ')}`)
    said(await erase(reason))
    await writeBarrier(db)
    const left = await db.query<{ found: boolean }>(
      `SELECT EXISTS (SELECT 1 FROM op_log WHERE tenant = $1) OR EXISTS (SELECT 1 FROM docs WHERE tenant = $1)
         OR EXISTS (SELECT 1 FROM dead_letters WHERE tenant = $1) OR EXISTS (SELECT 1 FROM snapshots WHERE tenant = $1) AS found`,
      [tenant],
    )
    if (left.rows[0]!.found) said(await erase(`${reason} (written back by a commit in flight)`))
  } finally {
    await db.end()
  }
}

/** Every blob under the tenant's snapshot prefix, whether or not a row named it (a put whose row never landed). */
export async function deleteTenantSnapshotBlobs(blobs: BlobStore, tenant: string, say: (line: string) => void): Promise<void> {
  const prefix = tenantSnapshotsPrefix(tenant)
  say(`deleting snapshot blobs under ${prefix} in ${blobs.location}`)
  // A line per batch of 1,000: the last one gives the total.
  const deleted = await deleteAll(blobs, blobs.list(prefix), (done) => say(`deleted ${done} snapshot blobs`))
  if (deleted === 0) say(`deleted 0 snapshot blobs`)
  const leftovers = await blobs.deleteLeftovers(prefix, true)
  if (leftovers > 0) say(`deleted ${leftovers} leftovers of unfinished puts`)
}

/** How long after a tenant's removal its name may be given again (erasureSettleMs). */
const REMOVAL_SETTLE_MS = 2 * ERASURE_CLOCK_SKEW_MS

/**
 * How long a tenant added under `tenant`'s name must wait for its last removal to settle: core
 * counts updates an edge stamped up to ERASURE_CLOCK_SKEW_MS after a tenant's erasure (PostgreSQL
 * time) as ingested before it, and drops them; an edge whose clock is up to that much behind
 * stamps that much earlier. So twice that after the erasure (by PostgreSQL's clock; never longer,
 * whatever a clock step says), the new tenant's first edits are its own. 0 when it was never
 * removed (or the database holds no erasures table yet).
 */
export async function erasureSettleMs(databaseUrl: string, tenant: string): Promise<number> {
  const db = new pg.Client(databaseUrl)
  await db.connect()
  try {
    if (!(await hasTable(db, 'erasures'))) return 0
    const r = await db.query<{ ms: number | null }>(
      `SELECT ceil(EXTRACT(EPOCH FROM max(at) + make_interval(secs => $2 / 1000.0) - clock_timestamp()) * 1000)::float8 AS ms FROM erasures WHERE tenant = $1 AND doc_id IS NULL`,
      [tenant, REMOVAL_SETTLE_MS],
    )
    return Math.min(REMOVAL_SETTLE_MS, Math.max(0, r.rows[0]?.ms ?? 0))
  } finally {
    await db.end()
  }
}

/** A table a core migration creates exists: the provisioner may run against a database core has not migrated that far. */
async function hasTable(db: pg.ClientBase, name: string): Promise<boolean> {
  return (await db.query<{ t: boolean }>('SELECT to_regclass($1) IS NOT NULL AS t', [name])).rows[0]!.t
}
