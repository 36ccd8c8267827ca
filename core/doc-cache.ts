import * as Y from 'yjs'

export interface CachedDoc {
  readonly tenant: string
  readonly docId: string
  readonly doc: Y.Doc
}

const key = (tenant: string, docId: string) => `${tenant}\0${docId}`

/**
 * Least-recently-used Y.Docs of one partition worker. Evicted docs are only dropped, not
 * destroyed, so a batch still holding one can persist it.
 */
export class DocCache {
  private readonly docs = new Map<string, CachedDoc>()

  constructor(private readonly maxDocs: number) {}

  get(tenant: string, docId: string): CachedDoc | undefined {
    const k = key(tenant, docId)
    const hit = this.docs.get(k)
    if (hit) {
      this.docs.delete(k)
      this.docs.set(k, hit)
    }
    return hit
  }

  /** Builds a cached doc from its stored state (null: a new document). */
  add(tenant: string, docId: string, state: Uint8Array | null): CachedDoc {
    const doc = new Y.Doc()
    if (state) Y.applyUpdate(doc, state)
    const entry: CachedDoc = { tenant, docId, doc }
    this.docs.set(key(tenant, docId), entry)
    if (this.docs.size > this.maxDocs) this.docs.delete(this.docs.keys().next().value as string)
    return entry
  }

  /** Drops a doc whose in-memory state may be ahead of what was committed. */
  evict(tenant: string, docId: string): void {
    this.docs.delete(key(tenant, docId))
  }

  clear(): void {
    this.docs.clear()
  }
}
