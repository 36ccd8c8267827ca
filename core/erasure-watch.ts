import type pg from 'pg'
import { AGG_MAX_AGE_MS } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'

/**
 * An edge stamps an update's ingest time with its own clock, an erasure its time with
 * PostgreSQL's: updates this much past an erasure still count as before it. Edges refuse a
 * document once it is deleted, which an erasure does first, so no later update of it nears this;
 * and a tenant's name is given again only after this time (scripts/lib/tenant-erasure.ts).
 */
export const ERASURE_CLOCK_SKEW_MS = 5_000

/** Default of CoreOptions.erasurePollMs: how often core looks for erasures it was not told of. */
export const DEFAULT_ERASURE_POLL_MS = 1_000

/**
 * The erasures (GDPR) of the last AGG_MAX_AGE_MS, which core must not undo: an update ingested
 * before its document's (or tenant's) erasure can still wait in AGG — core down or behind, or
 * sent in a partition batch the erasure's purge cannot match — and applying it would write the
 * erased content back for good. Erasures older than AGG keeps messages cannot have any left.
 *
 * The erased notice (core/doc-notices.ts) is best effort; this reads the erasures table at
 * start and every pollMs after, so a core that missed the notice drops its copy too (what it
 * would write back is fenced anyway: migration 011).
 */
export class ErasureWatch {
  /** Erasure time (ms) by document key, and by tenant ("" doc) for a tenant's removal. */
  private readonly erasedAtMs = new Map<string, number>()
  private lastId = 0
  private timer: NodeJS.Timeout | null = null
  private polling: Promise<void> | null = null

  constructor(
    private readonly pool: pg.Pool,
    private readonly log: Logger,
    private readonly pollMs: number,
    /** A document erased since start (null docId: the whole tenant): drop what memory holds of it. */
    private readonly erased: (tenant: string, docId: string | null) => void,
  ) {}

  /** Loads the recent erasures (a failure throws: core must not start blind to them), then polls. */
  async start(): Promise<void> {
    await this.read(`at > now() - make_interval(secs => ${AGG_MAX_AGE_MS / 1000})`, [], false)
    this.timer = setInterval(() => {
      this.polling ??= this.read('id > $1', [this.lastId], true)
        .catch((err: unknown) => this.log.warn({ err }, 'erasures not read; looking again at the next poll'))
        .finally(() => (this.polling = null))
    }, this.pollMs)
    this.timer.unref()
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    await this.polling
  }

  /** True when `ingestTs` (ms) is before an erasure of the document or its tenant: the update must never be applied. */
  erasedAfter(tenant: string, docId: string, ingestTs: number): boolean {
    if (this.erasedAtMs.size === 0) return false
    const at = Math.max(this.erasedAtMs.get(key(tenant, docId)) ?? -Infinity, this.erasedAtMs.get(key(tenant, null)) ?? -Infinity)
    return ingestTs <= at + ERASURE_CLOCK_SKEW_MS
  }

  private async read(where: string, params: unknown[], tell: boolean): Promise<void> {
    const r = await this.pool.query<{ id: string; tenant: string; doc_id: string | null; at: Date }>(`SELECT id, tenant, doc_id, at FROM erasures WHERE ${where} ORDER BY id`, params)
    for (const row of r.rows) {
      const k = key(row.tenant, row.doc_id)
      this.erasedAtMs.set(k, Math.max(this.erasedAtMs.get(k) ?? 0, row.at.getTime()))
      this.lastId = Math.max(this.lastId, Number(row.id))
      if (tell) this.erased(row.tenant, row.doc_id)
    }
  }
}

const key = (tenant: string, docId: string | null) => `${tenant}\u0000${docId ?? ''}`
