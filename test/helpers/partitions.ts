import type pg from 'pg'
import type { JetStreamManager } from '@nats-io/jetstream'
import { AGG_STREAM, parseEditSubject } from '../../contracts/mod.ts'
import { LEASE_NAMESPACE } from '../../core/lease.ts'

/**
 * The partition of each document that has a committed edit: nats-server picks it (a hash of the
 * doc token), so it is read back from the subject AGG stored the doc's first committed edit under.
 */
export async function partitionsOf(db: pg.Pool, jsm: JetStreamManager, tenant: string, docIds: string[]): Promise<Map<string, number>> {
  const r = await db.query<{ doc_id: string; seq: string }>('SELECT doc_id, min(stream_seq) AS seq FROM op_log WHERE tenant = $1 AND doc_id = ANY($2) GROUP BY doc_id', [tenant, docIds])
  const partitions = new Map<string, number>()
  for (const row of r.rows) {
    const stored = await jsm.streams.getMessage(AGG_STREAM, { seq: Number(row.seq) })
    if (!stored) throw new Error(`AGG has no message ${row.seq}`)
    partitions.set(row.doc_id, parseEditSubject(stored.subject).partition)
  }
  return partitions
}

/** Docs of `partitions` grouped by partition, largest group first. */
export function byPartition(partitions: Map<string, number>): [number, string[]][] {
  const groups = new Map<number, string[]>()
  for (const [doc, p] of partitions) groups.set(p, [...(groups.get(p) ?? []), doc])
  return [...groups].sort((a, b) => b[1].length - a[1].length)
}

/** The PostgreSQL sessions holding partition leases (granted advisory locks of the lease namespace). */
export async function leaseSessions(db: pg.Pool): Promise<{ partition: number; pid: number; app: string }[]> {
  const r = await db.query(
    `SELECT l.objid::int AS partition, l.pid, a.application_name AS app FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.classid = $1::bigint::oid AND l.objsubid = 2 AND l.granted`,
    [LEASE_NAMESPACE],
  )
  return r.rows
}
