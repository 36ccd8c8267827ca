import * as Y from 'yjs'
import type { StoredDoc } from './store.ts'
import { applyStored, type ClientOwners } from './client-users.ts'

export interface CachedDoc {
  readonly tenant: string
  readonly docId: string
  readonly doc: Y.Doc
  /** Committed op-log rows not folded into the stored state yet (batch.ts compacts past a limit or an age). */
  uncompacted: number
  /** The document has a docs row (a compacted state). */
  compacted: boolean
  /** Estimated bytes of the doc in memory: its loaded state and tail, plus every committed update since (reset to the state's size at compaction). */
  bytes: number
  /** When the oldest uncompacted op was committed (or the doc loaded with a tail), ms since epoch; null when none. */
  uncompactedSince: number | null
  /** The highest stream sequence the doc holds, stored or applied since (0: none). */
  lastStreamSeq: number
  /** Ingest time of that op, ms since epoch; 0 when unknown. */
  lastIngestTs: number
  /** Who owns each Yjs client id, the doc's updates not committed yet included (client-users.ts). */
  readonly owners: ClientOwners
  /** How many of `owners` docs.client_users holds (owners only grow): compaction rewrites it only when more are known. */
  ownersStored: number
}

export const docKey = (tenant: string, docId: string) => `${tenant}\0${docId}`

/** Default of CoreOptions.maxDocCacheBytes (CORE_DOC_CACHE_MB): 256 MiB per core process. */
export const DEFAULT_DOC_CACHE_BYTES = 256 * 1024 ** 2

/** Default of CoreOptions.compactAfterMs (CORE_COMPACT_AFTER_MS): ops stay uncompacted at most about a minute. */
export const DEFAULT_COMPACT_AFTER_MS = 60_000

/**
 * The documents' bytes every partition worker of one core process holds, against one limit
 * (CORE_DOC_CACHE_MB). A worker over the limit evicts its own least recently used docs.
 */
export class DocCacheBudget {
  private total = 0

  constructor(
    /** Bytes the process's doc caches may hold together. */
    readonly maxBytes: number,
    /** Told every change of the total (a gauge) and every eviction (a counter). */
    private readonly report: { bytes(delta: number): void; evicted(): void } = { bytes: () => undefined, evicted: () => undefined },
  ) {}

  get bytes(): number {
    return this.total
  }

  get over(): boolean {
    return this.total > this.maxBytes
  }

  change(delta: number): void {
    this.total += delta
    this.report.bytes(delta)
  }

  evicted(): void {
    this.report.evicted()
  }
}

export interface DocCacheOptions {
  /** Documents kept by this worker (the batch in hand may pin more). Default 2_000. */
  maxDocs: number
  /** Shared byte limit of the process's caches. Default: a budget of DEFAULT_DOC_CACHE_BYTES for this cache alone. */
  budget?: DocCacheBudget
  /** A doc whose oldest uncompacted op is this old is due a compaction (batch.ts docRows). Default DEFAULT_COMPACT_AFTER_MS. */
  compactAfterMs?: number
}

/**
 * Least-recently-used Y.Docs of one partition worker, bounded by count and by bytes.
 *
 * Invariant: a pinned doc is never evicted. The worker pins every doc the batch in hand touches
 * until that batch commits, so one batch never holds two copies of a document (an evicted doc
 * reloaded from its stale committed state would lose the batch's earlier updates and make the
 * state upsert touch one row twice). The cache may hold more than its limits while pinned docs
 * exceed them; `unpinAll` trims it back.
 *
 * A doc's bytes are estimated without encoding it on access: the bytes it was loaded from plus
 * the bytes of every update committed to it since (Yjs state grows by about the update's size;
 * deletes make it err high), set to the encoded state's size whenever it is compacted.
 */
export class DocCache {
  private readonly docs = new Map<string, CachedDoc>()
  private readonly pinned = new Set<string>()
  /** Pinned docs forgotten meanwhile: dropped when the batch unpins them. */
  private readonly forgotten = new Set<string>()
  /** Docs with uncompacted ops, oldest uncompacted first (a Map keeps insertion order). */
  private readonly aging = new Map<string, CachedDoc>()
  private readonly maxDocs: number
  private readonly budget: DocCacheBudget
  readonly compactAfterMs: number

  constructor(o: DocCacheOptions) {
    this.maxDocs = o.maxDocs
    this.budget = o.budget ?? new DocCacheBudget(DEFAULT_DOC_CACHE_BYTES)
    this.compactAfterMs = o.compactAfterMs ?? DEFAULT_COMPACT_AFTER_MS
  }

  get size(): number {
    return this.docs.size
  }

  /** Estimated bytes of this cache's docs. */
  get bytes(): number {
    let n = 0
    for (const d of this.docs.values()) n += d.bytes
    return n
  }

  /** Ids of the tenant's documents in memory. */
  docIdsOf(tenant: string): string[] {
    return [...this.docs.values()].filter((d) => d.tenant === tenant).map((d) => d.docId)
  }

  get(tenant: string, docId: string): CachedDoc | undefined {
    const k = docKey(tenant, docId)
    const hit = this.docs.get(k)
    if (hit) {
      this.docs.delete(k)
      this.docs.set(k, hit)
    }
    return hit
  }

  /**
   * Builds a cached doc from what is stored of it (null: a new document) and caches it, replacing
   * any copy. Throws when the stored state or tail does not apply (the cache is left unchanged).
   */
  add(tenant: string, docId: string, stored: StoredDoc | null): CachedDoc {
    const doc = new Y.Doc()
    // One transaction for state and tail, applied in order: each transaction's cleanup costs
    // (measured on the 100K-update bench document, 394 KB + 128 tail rows: median 40–45 ms one
    // transaction per update, 29–35 ms in one).
    const owners = doc.transact(() => (stored ? applyStored(doc, stored) : new Map<number, string>()))
    const tail = stored?.tail.length ?? 0
    const bytes = (stored?.state?.byteLength ?? 0) + (stored?.tail ?? []).reduce((n, u) => n + u.byteLength, 0)
    const ownersStored = Object.keys(stored?.stateOwners ?? {}).length
    const entry: CachedDoc = { tenant, docId, doc, uncompacted: tail, compacted: Boolean(stored?.state), bytes, uncompactedSince: tail > 0 ? Date.now() : null, lastStreamSeq: stored?.maxSeq ?? 0, lastIngestTs: 0, owners, ownersStored }
    const k = docKey(tenant, docId)
    this.drop(k)
    this.docs.set(k, entry)
    this.budget.change(bytes)
    if (entry.uncompactedSince !== null) this.aging.set(k, entry)
    this.trim(k)
    return entry
  }

  /** Keeps the doc in memory until `unpinAll`. */
  pin(entry: CachedDoc): void {
    this.pinned.add(docKey(entry.tenant, entry.docId))
  }

  /** Ends the batch's pins, drops what was forgotten meanwhile and evicts down to the limits. */
  unpinAll(): void {
    this.pinned.clear()
    for (const k of this.forgotten) this.drop(k)
    this.forgotten.clear()
    this.trim()
  }

  /**
   * Drops a doc an operator deleted or erased — once the batch in hand, if it pins the doc, is
   * done with it: evicting it mid-batch would have the batch's next update for it reload the
   * stored state into a second copy, and the state written from the first would lack that update.
   */
  forget(tenant: string, docId: string): void {
    const k = docKey(tenant, docId)
    if (this.pinned.has(k)) this.forgotten.add(k)
    else this.drop(k)
  }

  /** After a commit: `ops` more op-log rows of `entry` (`bytes` of updates, the newest at `lastStreamSeq`) are committed, not compacted. */
  committedOps(entry: CachedDoc, ops: number, bytes: number, lastStreamSeq: number, lastIngestTs: number): void {
    entry.uncompacted += ops
    entry.lastStreamSeq = Math.max(entry.lastStreamSeq, lastStreamSeq)
    entry.lastIngestTs = Math.max(entry.lastIngestTs, lastIngestTs)
    const k = docKey(entry.tenant, entry.docId)
    if (this.docs.get(k) === entry) this.budget.change(bytes)
    entry.bytes += bytes
    if (entry.uncompacted > 0 && entry.uncompactedSince === null) {
      entry.uncompactedSince = Date.now()
      if (this.docs.get(k) === entry) this.aging.set(k, entry)
    }
  }

  /** After a commit that wrote `entry`'s state (`stateBytes` long): nothing of it is uncompacted. */
  compactedState(entry: CachedDoc, stateBytes: number, ownersStored: number): void {
    const k = docKey(entry.tenant, entry.docId)
    if (this.docs.get(k) === entry) this.budget.change(stateBytes - entry.bytes)
    entry.bytes = stateBytes
    entry.ownersStored = ownersStored
    entry.uncompacted = 0
    entry.compacted = true
    entry.uncompactedSince = null
    if (this.aging.get(k) === entry) this.aging.delete(k)
  }

  /** The doc's oldest uncompacted op is at least compactAfterMs old. */
  isAged(entry: CachedDoc, nowMs = Date.now()): boolean {
    return entry.uncompactedSince !== null && nowMs - entry.uncompactedSince >= this.compactAfterMs
  }

  /**
   * Up to `limit` docs due an age compaction, oldest first, except `skip` (by docKey) and docs
   * this worker never committed an op to (no stream sequence to tag a state with).
   */
  aged(limit: number, skip: (k: string) => boolean = () => false, nowMs = Date.now()): CachedDoc[] {
    const out: CachedDoc[] = []
    for (const [k, entry] of this.aging) {
      if (out.length === limit || !this.isAged(entry, nowMs)) break
      if (!skip(k) && entry.lastStreamSeq > 0) out.push(entry)
    }
    return out
  }

  /** Drops a doc whose in-memory state may be ahead of what was committed (or was erased). */
  evict(tenant: string, docId: string): void {
    const k = docKey(tenant, docId)
    this.drop(k)
    this.pinned.delete(k)
  }

  clear(): void {
    for (const k of [...this.docs.keys()]) this.drop(k)
    this.pinned.clear()
    this.forgotten.clear()
  }

  private drop(k: string): void {
    const entry = this.docs.get(k)
    if (!entry) return
    this.docs.delete(k)
    this.aging.delete(k)
    this.budget.change(-entry.bytes)
  }

  /** Evicts least recently used unpinned docs, except `keep` (just added), while over `maxDocs` or the byte budget. */
  private trim(keep?: string): void {
    const over = () => this.docs.size > this.maxDocs || this.budget.over
    if (!over()) return
    for (const k of [...this.docs.keys()]) {
      if (!over()) return
      if (k === keep || this.pinned.has(k)) continue
      this.drop(k)
      this.budget.evicted()
    }
  }
}
