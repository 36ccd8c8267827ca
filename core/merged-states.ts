import type pg from 'pg'
import type { CoreMetrics } from './metrics.ts'
import { docKey } from './doc-cache.ts'
import { mergedState, readDocParts } from './store.ts'

/** Bytes of merged states the read API keeps. */
export const DEFAULT_MERGED_STATES_BYTES = 64 * 1024 ** 2

/**
 * The read API's `GET /state` of documents stored with an op-log tail. Merging a tail into a
 * large state costs tens of ms on the event loop every tenant's commits share, so a tenant
 * reading one large document over and over stalled the others' commits (review: 12 readers of a
 * 1 MB document took another tenant's commits from 7 to 182 ms median). Invariant: a state is
 * served from here only while the document's stored parts are the ones it was merged from (same
 * highest stream sequence, tail length and state size); least recently read go first.
 */
export class MergedStates {
  private readonly states = new Map<string, { parts: string; state: Uint8Array }>()
  private bytes = 0

  constructor(
    private readonly pool: pg.Pool,
    private readonly metrics: CoreMetrics,
    private readonly maxBytes = DEFAULT_MERGED_STATES_BYTES,
  ) {}

  /** The document as one Yjs update, or null when its tenant has no such document. */
  async read(tenant: string, docId: string): Promise<Uint8Array | null> {
    const k = docKey(tenant, docId)
    const parts = await readDocParts(this.pool, tenant, docId)
    if (!parts || parts.tail.length === 0) {
      this.drop(k) // erased, or compacted since
      return parts && parts.state!
    }
    const version = `${parts.maxSeq}/${parts.tail.length}/${parts.state?.byteLength ?? 0}`
    const held = this.states.get(k)
    if (held) this.drop(k)
    if (held?.parts === version) {
      this.metrics.readStateMerges.inc({ outcome: 'cached' })
      this.keep(k, held)
      return held.state
    }
    this.metrics.readStateMerges.inc({ outcome: 'merged' })
    const state = mergedState(parts)
    this.keep(k, { parts: version, state })
    return state
  }

  /** A document was deleted or erased (null: every document of a removed tenant): its merged state goes from memory. */
  forget(tenant: string, docId: string | null): void {
    if (docId !== null) return this.drop(docKey(tenant, docId))
    for (const k of [...this.states.keys()]) if (k.startsWith(docKey(tenant, ''))) this.drop(k)
  }

  private keep(k: string, entry: { parts: string; state: Uint8Array }): void {
    if (entry.state.byteLength > this.maxBytes) return
    this.states.set(k, entry)
    this.bytes += entry.state.byteLength
    for (const [oldest] of this.states) {
      if (this.bytes <= this.maxBytes) break
      this.drop(oldest)
    }
    this.metrics.readStateCacheBytes.set(this.bytes)
  }

  private drop(k: string): void {
    const entry = this.states.get(k)
    if (!entry) return
    this.states.delete(k)
    this.bytes -= entry.state.byteLength
    this.metrics.readStateCacheBytes.set(this.bytes)
  }
}
