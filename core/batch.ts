import * as Y from 'yjs'
import type { JsMsg } from '@nats-io/jetstream'
import { decodeEdits, decodeFailureReason, editMsgId, encodeEnvelope, editPartitionOf, parseEditSubject, type EditEnvelope } from '../contracts/mod.ts'
import { applyTracked } from './apply.ts'
import { docKey, type CachedDoc, type DocCache } from './doc-cache.ts'
import type { CoreMetrics } from './metrics.ts'
import type { DeadLetterRow, DocRow, OpRow, StoredDoc } from './store.ts'

/**
 * One update of a stream message after schema checks (a batch message carries several; `item`
 * is its index): an edit, or the reason it cannot be one. Whether the update's bytes apply is
 * learnt by applying them (BatchBuilder.apply dead-letters what Yjs throws on).
 */
export type DecodedItem = { msg: JsMsg; item: number; edit: EditEnvelope; msgId: string } | { msg: JsMsg; item: number; failure: string; edit?: EditEnvelope }

/** The updates of a stream message; a message that does not decode at all is one failed item. */
export function decodeMessage(msg: JsMsg, partitions: number): DecodedItem[] {
  let edits: EditEnvelope[]
  let subject
  try {
    subject = parseEditSubject(msg.subject)
    edits = decodeEdits(msg.data)
  } catch (err) {
    return [{ msg, item: 0, failure: decodeFailureReason(err) }]
  }
  return edits.map((edit, item) => {
    try {
      if (edit.tenant !== subject.tenant || (subject.docId !== null && edit.docId !== subject.docId)) throw new Error('envelope tenant/doc differ from the subject')
      if (editPartitionOf(edit.docId, partitions) !== subject.partition) throw new Error(`document ${JSON.stringify(edit.docId)} is not in partition ${subject.partition}`)
      return { msg, item, edit, msgId: editMsgId(edit.tenant, edit.docId, edit.update) }
    } catch (err) {
      return { msg, item, failure: decodeFailureReason(err), edit }
    }
  })
}

/** Ingest time past event time beyond which a committed update counts as late (an offline edit): 60 s. */
export const DEFAULT_LATE_AFTER_MS = 60_000

/** Document states one batch rewrites at most; the others stay due and go with later batches. */
const MAX_COMPACTIONS_PER_BATCH = 8

const reasonOf = (prefix: string, err: unknown) => `${prefix}: ${err instanceof Error ? err.message : String(err)}`

/**
 * Folds one batch of a partition's messages into its documents and collects what the batch
 * commits: op-log rows, compacted document states and dead letters.
 *
 * Invariants: every doc the batch touches stays pinned in the cache until the batch commits
 * (doc-cache.ts), so there is one copy of it; an update that cannot be applied — it does not
 * decode, or Yjs throws on it, or its document's stored state does not load — becomes a dead
 * letter with its reason and bytes and never blocks the partition; a document Yjs threw on is
 * rebuilt from its stored state plus the batch's earlier ops for it, since a throw can leave
 * the in-memory doc half-modified. The op log is the record: a document's state is written
 * (compacted) only when it is new or `compactEveryOps` ops have gathered since its last state,
 * so a cold load replays at most that many ops on top of it.
 */
export class BatchBuilder {
  readonly ops: OpRow[] = []
  readonly deadLetters: DeadLetterRow[] = []
  private readonly touched = new Map<string, { cached: CachedDoc; ops: number; lastStreamSeq: number }>()
  private compacting: { cached: CachedDoc; ops: number }[] = []

  constructor(
    private readonly stream: string,
    private readonly cache: DocCache,
    private readonly loadDoc: (tenant: string, docId: string) => Promise<StoredDoc | null>,
    private readonly metrics: CoreMetrics,
    private readonly compactEveryOps: number,
    /** An update whose ingest time is this far past its event time is counted late. Default DEFAULT_LATE_AFTER_MS. */
    private readonly lateAfterMs = DEFAULT_LATE_AFTER_MS,
  ) {}

  get empty(): boolean {
    return this.ops.length === 0 && this.deadLetters.length === 0
  }

  /** Docs whose in-memory state is ahead of what is committed until this batch commits. */
  get touchedDocs(): CachedDoc[] {
    return [...this.touched.values()].map((t) => t.cached)
  }

  /** Its payload: the update as a single envelope when it decoded that far, else the message's bytes. */
  deadLetter(msg: JsMsg, item: number, edit: EditEnvelope | undefined, reason: string): void {
    this.deadLetters.push({ stream: this.stream, streamSeq: msg.seq, item, subject: msg.subject, tenant: edit?.tenant ?? null, docId: edit?.docId ?? null, reason, payload: edit ? encodeEnvelope(edit) : msg.data })
    this.metrics.deadLetters.inc({ reason: reason.split(':')[0] })
  }

  async apply(msg: JsMsg, item: number, edit: EditEnvelope, msgId: string): Promise<void> {
    let cached = this.cache.get(edit.tenant, edit.docId)
    if (!cached) {
      // A failing read throws (the batch is retried); stored state Yjs cannot load is dead-lettered.
      const stored = await this.loadDoc(edit.tenant, edit.docId)
      try {
        cached = this.cache.add(edit.tenant, edit.docId, stored)
      } catch (err) {
        this.deadLetter(msg, item, edit, reasonOf('state', err))
        return
      }
    }
    this.cache.pin(cached)
    let outcome
    try {
      outcome = applyTracked(cached.doc, edit.update)
    } catch (err) {
      this.deadLetter(msg, item, edit, reasonOf('apply', err))
      await this.rebuild(edit.tenant, edit.docId)
      return
    }
    this.metrics.updates.inc({ outcome })
    if (outcome === 'duplicate') return
    this.ops.push({ tenant: edit.tenant, docId: edit.docId, streamSeq: msg.seq, msgId, userId: edit.userId, edgeId: edit.edgeId, update: edit.update, status: outcome, ingestTs: edit.ingestTs, eventTs: edit.eventTs ?? edit.ingestTs })
    const k = docKey(edit.tenant, edit.docId)
    const entry = this.touched.get(k) ?? { cached, ops: 0, lastStreamSeq: 0 }
    entry.ops += 1
    entry.lastStreamSeq = msg.seq
    this.touched.set(k, entry)
  }

  /**
   * States to write: documents that are new or have gathered `compactEveryOps` ops since their
   * last state — at most MAX_COMPACTIONS_PER_BATCH, so documents that reach the limit together
   * (opened together, typed alike) spread their rewrites over several commits.
   */
  docRows(): DocRow[] {
    const due = [...this.touched.values()].filter(({ cached, ops }) => !cached.compacted || cached.uncompacted + ops >= this.compactEveryOps).slice(0, MAX_COMPACTIONS_PER_BATCH)
    this.compacting = due.map(({ cached, ops }) => ({ cached, ops }))
    return due.map(({ cached, ops, lastStreamSeq }) => ({
      tenant: cached.tenant,
      docId: cached.docId,
      state: Y.encodeStateAsUpdate(cached.doc),
      stateVector: Y.encodeStateVector(cached.doc),
      lastStreamSeq,
      ops: cached.uncompacted + ops,
    }))
  }

  /** After the commit: what each touched doc has stored now. */
  committed(): void {
    for (const { cached, ops } of this.touched.values()) cached.uncompacted += ops
    for (const { cached } of this.compacting) {
      cached.uncompacted = 0
      cached.compacted = true
    }
    this.metrics.compactions.inc(this.compacting.length)
    // Counted here, after the commit: a batch that fails is retried and would count its ops twice.
    for (const op of this.ops) if (op.ingestTs - op.eventTs > this.lateAfterMs) this.metrics.lateUpdates.inc({ tenant: op.tenant })
  }

  /** Replaces a doc Yjs threw on with its stored state plus this batch's ops for it. */
  private async rebuild(tenant: string, docId: string): Promise<void> {
    const cached = this.cache.add(tenant, docId, await this.loadDoc(tenant, docId))
    this.cache.pin(cached)
    for (const op of this.ops) if (op.tenant === tenant && op.docId === docId) Y.applyUpdate(cached.doc, op.update)
    const entry = this.touched.get(docKey(tenant, docId))
    if (entry) entry.cached = cached
  }
}
