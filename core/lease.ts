import pg from 'pg'
import { LeaseLostError } from './errors.ts'

// First key of the two-int advisory lock; the partition is the second.
const LEASE_NAMESPACE = 0x64660002

/**
 * Ownership of one partition: a session advisory lock on a dedicated PostgreSQL connection.
 * The worker commits on that same connection, so if the session dies the lock and every
 * further commit go with it: a stale owner cannot write (fencing without epochs).
 */
export class PartitionLease {
  private constructor(
    readonly client: pg.Client,
    private lost: Error | null,
  ) {}

  /** Returns the lease, or null when another process holds it. */
  static async tryAcquire(databaseUrl: string, partition: number): Promise<PartitionLease | null> {
    const client = new pg.Client({ connectionString: databaseUrl, application_name: `docflow-core-p${partition}` })
    await client.connect()
    const lease = new PartitionLease(client, null)
    client.on('error', (err) => {
      lease.lost = err
    })
    const r = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [LEASE_NAMESPACE, partition])
    if (r.rows[0]?.ok) return lease
    await client.end()
    return null
  }

  /** Throws LeaseLostError once the session is gone. */
  check(): void {
    if (this.lost) throw new LeaseLostError('partition lease session ended', { cause: this.lost })
  }

  get isLost(): boolean {
    return this.lost !== null
  }

  async release(): Promise<void> {
    // Ending the session frees the advisory lock.
    await this.client.end()
  }
}
