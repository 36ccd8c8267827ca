import * as Y from 'yjs'
import type { StoredDoc } from './store.ts'

export interface CachedDoc {
  readonly tenant: string
  readonly docId: string
  readonly doc: Y.Doc
  /** Committed op-log rows not folded into the stored state yet (batch.ts compacts past a limit). */
  uncompacted: number
  /** The document has a docs row (a compacted state). */
  compacted: boolean
}

export const docKey = (tenant: string, docId: string) => `${tenant}\0${docId}`

/**
 * Least-recently-used Y.Docs of one partition worker.
 *
 * Invariant: a pinned doc is never evicted. The worker pins every doc the batch in hand touches
 * until that batch commits, so one batch never holds two copies of a document (an evicted doc
 * reloaded from its stale committed state would lose the batch's earlier updates and make the
 * state upsert touch one row twice). The cache may hold more than `maxDocs` while pinned docs
 * exceed it; `unpinAll` trims it back.
 */
export class DocCache {
  private readonly docs = new Map<string, CachedDoc>()
  private readonly pinned = new Set<string>()

  constructor(private readonly maxDocs: number) {}

  get size(): number {
    return this.docs.size
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
    if (stored?.state) Y.applyUpdate(doc, stored.state)
    for (const update of stored?.tail ?? []) Y.applyUpdate(doc, update)
    const entry: CachedDoc = { tenant, docId, doc, uncompacted: stored?.tail.length ?? 0, compacted: Boolean(stored?.state) }
    const k = docKey(tenant, docId)
    this.docs.delete(k)
    this.docs.set(k, entry)
    this.trim(k)
    return entry
  }

  /** Keeps the doc in memory until `unpinAll`. */
  pin(entry: CachedDoc): void {
    this.pinned.add(docKey(entry.tenant, entry.docId))
  }

  /** Ends the batch's pins and evicts down to `maxDocs`. */
  unpinAll(): void {
    this.pinned.clear()
    this.trim()
  }

  /** Drops a doc whose in-memory state may be ahead of what was committed. */
  evict(tenant: string, docId: string): void {
    const k = docKey(tenant, docId)
    this.docs.delete(k)
    this.pinned.delete(k)
  }

  clear(): void {
    this.docs.clear()
    this.pinned.clear()
  }

  /** Evicts least recently used unpinned docs, except `keep` (just added), while over `maxDocs`. */
  private trim(keep?: string): void {
    if (this.docs.size <= this.maxDocs) return
    for (const k of this.docs.keys()) {
      if (this.docs.size <= this.maxDocs) return
      if (k !== keep && !this.pinned.has(k)) this.docs.delete(k)
    }
  }
}
