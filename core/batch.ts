import * as Y from 'yjs'
import type { JsMsg } from '@nats-io/jetstream'
import { DeadLetterReason, STREAM_SOURCE_HEADER, sourcedFromTenant, decodeEdits, decodeFailureReason, deadLetterReasonClass, editMsgId, encodeEnvelope, editPartitionOf, parseEditSubject, type CleanEvent, type EditEnvelope } from '../contracts/mod.ts'
import { applyTracked, type ApplyResult, type ApplySummary } from './apply.ts'
import { cleanEvent } from './clean-events.ts'
import { isVersionRegressionError } from './errors.ts'
import type { PendingDoc, SettledDoc } from './gap-watch.ts'
import { describeOverlap, findOverlapViolation } from '../runtime/overlap.ts'
import { malformedUpdate, misplacedItem } from '../runtime/yjs-items.ts'
import { docKey, type CachedDoc, type DocCache } from './doc-cache.ts'
import { foreignClient, heldIn, ownersJson, writtenClients, type ClientOwners } from './client-users.ts'
import { claimUnowned } from '../runtime/client-users.ts'
import type { CoreMetrics } from './metrics.ts'
import { fencedKey, itemKey, type DeadLetterRow, type DocRow, type OpRow, type StoredDoc } from './store.ts'

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
    if (!sourcedFromTenant(msg.headers?.get(STREAM_SOURCE_HEADER), subject.tenant)) throw new Error(`not from tenant ${subject.tenant}'s stream (${STREAM_SOURCE_HEADER}: ${msg.headers?.get(STREAM_SOURCE_HEADER) || 'none'})`)
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

/** Tenant and doc of a stored edit subject; null when it is not one. */
function subjectOf(subject: string): { tenant: string; docId: string | null } | null {
  try {
    return parseEditSubject(subject)
  } catch {
    return null // not an edit subject: the dead letter's tenant is unknown
  }
}

/**
 * `text` as a text column can hold it: PostgreSQL refuses a NUL, and a dead letter's texts come
 * from outside (a subject, an error message quoting the update's bytes). One refused dead-letter
 * row failed its partition's every commit, for every tenant, forever.
 */
const storableText = (text: string) => text.replaceAll('\u0000', '\\u0000')

/** Ingest time past event time beyond which a committed update counts as late (an offline edit): 60 s. */
export const DEFAULT_LATE_AFTER_MS = 60_000

/** Document states one batch rewrites at most; the others stay due and go with later batches. */
const MAX_COMPACTIONS_PER_BATCH = 8

const reasonOf = (prefix: string, err: unknown) => `${prefix}: ${err instanceof Error ? err.message : String(err)}`

/**
 * What becomes of an update in its document: refused (a dead letter's reason; `rebuild` when the
 * document took part of it first), or applied with the violation it was recorded with.
 */
type Verdict = { refusal: string; rebuild: boolean } | { result: ApplyResult; violation: string | null; summary: ApplySummary | null; written: number[] }

/**
 * The clients `update` writes under (client-users.ts): read off the apply where it took the
 * update whole into a doc holding nothing pending (a typing client's), else from the update's
 * own structs against what the doc held before: its clocks then and its pending structs.
 */
function writtenBy(doc: Y.Doc, update: Uint8Array, result: ApplyResult, pendingBefore: Uint8Array | undefined): number[] {
  if (result.outcome === 'duplicate') return []
  if (result.outcome === 'applied' && pendingBefore === undefined && doc.store.pendingStructs === null) return [...result.integrated!.to.keys()]
  return writtenClients(update, heldIn(doc, { state: (client) => result.integrated?.from.get(client) ?? Y.getState(doc.store, client), pending: pendingBefore ?? null }))
}

/** Runs the data-quality checks around applying `edit` to `doc` (whose client ids `owners` names); writes nothing but the document. */
function judgeAndApply(doc: Y.Doc, owners: ClientOwners, edit: EditEnvelope): Verdict {
  // HTTP ingest tried it on no document: neighbours in different lists are refused before it
  // touches the document, since undoing an apply costs a rebuild of the whole document.
  const malformed = malformedUpdate(edit.update, edit.source === 'http' ? doc : undefined)
  if (malformed) return { refusal: `${DeadLetterReason.MalformedItem}: ${malformed}`, rebuild: false }
  // A violation is recorded, and the update is still applied as Yjs applies it everywhere: the
  // document keeps the content it holds for those clocks, and what the update adds past them
  // goes in — as on every edge and client that already received it (edges fan an update out
  // once JetStream has it). Refusing it here would leave the materialized state short of what
  // every client shows, for good.
  const found = findOverlapViolation(doc, edit.update)
  const violation = found && describeOverlap(found)
  const pendingBefore = doc.store.pendingStructs?.update
  let result: ApplyResult
  try {
    result = applyTracked(doc, edit.update)
  } catch (err) {
    // One dead letter per update (its key is the stream message and item): the refusal, naming the violation too.
    const refusal = reasonOf(isVersionRegressionError(err) ? DeadLetterReason.VersionRegression : DeadLetterReason.Apply, err)
    return { refusal: violation ? `${refusal}; it was also a ${violation}` : refusal, rebuild: true }
  }
  // HTTP ingest tried it on no document (the edge may hold no room for it): its items are judged
  // here, in the document's context, as an edge's probe judges a socket's (runtime/yjs-items.ts) —
  // all the document took, with pending structs of earlier posts it released, which the edge
  // never saw; so is any update that released some. A pending struct waits only for clocks of its
  // own client (unplacedNeighbour), so the update answering for a misplaced release is that
  // client's own: refused, it costs no one else an edit.
  const judged = edit.source === 'http' || result.released
  const misplaced = judged && result.integrated ? misplacedItem(doc, result.integrated) : null
  if (misplaced) return { refusal: `${DeadLetterReason.MalformedItem}: ${misplaced}`, rebuild: true }
  // Judged after the apply (a typing client's update needs no decode of its own): only a forgery
  // pays the rebuild. A pending one too, at once: released later, it would be judged as the releaser's.
  const written = writtenBy(doc, edit.update, result, pendingBefore)
  const foreign = foreignClient(owners, written, edit.userId)
  if (foreign) return { refusal: `${DeadLetterReason.ForeignClient}: ${foreign}`, rebuild: true }
  return { result, violation, summary: result.summary ?? null, written }
}

/** What a committed batch hands to core's feeds and its sequence-gap watch (core.ts), after the commit. */
export interface BatchFeeds {
  deadLetters: DeadLetterRow[]
  /** One per applied update, in stream order. */
  cleanEvents: CleanEvent[]
  /** Touched documents holding pending structs now. */
  pending: PendingDoc[]
  /** Touched documents holding none. */
  settled: SettledDoc[]
}

/**
 * Folds one batch of a partition's messages into its documents and collects what the batch
 * commits: op-log rows, compacted document states and dead letters.
 *
 * Invariants: every doc the batch touches stays pinned in the cache until the batch commits
 * (doc-cache.ts), so there is one copy of it; an update that cannot be applied — it does not
 * decode, or Yjs throws on it, or its document's stored state does not load — becomes a dead
 * letter with its reason and bytes and never blocks the partition; a document Yjs threw on is
 * rebuilt from its stored state plus the batch's earlier ops for it, since a throw can leave
 * the in-memory doc half-modified; so is one a check of ours throws on. Data quality in Yjs
 * terms (overlap.ts, apply.ts): an update that would move the doc's version backwards is a dead
 * letter and never enters state; one whose already-seen clocks carry other content than the doc
 * holds is recorded as a violation and applied as every client applied it; a retry is counted
 * per tenant and dropped. Each applied update yields its cleaned event. The op log is the record: a document's state is written
 * (compacted) only when it is new or `compactEveryOps` ops have gathered since its last state,
 * so a cold load replays at most that many ops on top of it.
 */
export class BatchBuilder {
  readonly ops: OpRow[] = []
  readonly deadLetters: DeadLetterRow[] = []
  readonly cleanEvents: CleanEvent[] = []
  /** Updates dead-lettered instead of applied (itemKey): their edits are not saved. */
  readonly refused = new Set<string>()
  /** Per touched doc key: its first update of this batch that went pending. */
  private readonly pendingSources = new Map<string, PendingDoc['source']>()
  /** Doc keys this batch loaded from the store holding pending structs (gap-watch.ts takes over their reports). */
  private readonly loadedPending = new Set<string>()
  private readonly touched = new Map<string, { cached: CachedDoc; ops: number; lastStreamSeq: number }>()
  private compacting: { cached: CachedDoc; stateBytes: number; owners: number }[] = []

  constructor(
    private readonly stream: string,
    private readonly cache: DocCache,
    private readonly loadDoc: (tenant: string, docId: string) => Promise<StoredDoc | null>,
    private readonly metrics: CoreMetrics,
    private readonly compactEveryOps: number,
    /** An update whose ingest time is this far past its event time is counted late. Default DEFAULT_LATE_AFTER_MS. */
    private readonly lateAfterMs = DEFAULT_LATE_AFTER_MS,
    /** True for an update ingested before its document's erasure (core/erasure-watch.ts): never applied. */
    private readonly erasedAfter: (tenant: string, docId: string, ingestTs: number) => boolean = () => false,
  ) {}

  get empty(): boolean {
    return this.ops.length === 0 && this.deadLetters.length === 0
  }

  /** Docs whose in-memory state is ahead of what is committed until this batch commits. */
  get touchedDocs(): CachedDoc[] {
    return [...this.touched.values()].map((t) => t.cached)
  }

  /**
   * Its payload: the update as a single envelope when it decoded that far, else the message's
   * bytes. Its tenant (and doc) come from the envelope, else from the stored subject (nats-server
   * only stores a tenant's subjects in that tenant's stream), else are unknown. `applied`: a
   * violation recorded of an update that still went in.
   */
  deadLetter(msg: JsMsg, item: number, edit: EditEnvelope | undefined, reason: string, applied = false): void {
    if (!applied) this.refused.add(itemKey(msg.seq, item))
    const where = edit ?? subjectOf(msg.subject)
    const docId = where?.docId ?? null
    this.deadLetters.push({ stream: this.stream, streamSeq: msg.seq, item, subject: storableText(msg.subject), tenant: where?.tenant ?? null, docId: docId && storableText(docId), reason: storableText(reason), payload: edit ? encodeEnvelope(edit) : msg.data })
    this.metrics.deadLetters.inc({ reason: deadLetterReasonClass(reason), tenant: where?.tenant ?? 'unknown' })
  }

  async apply(msg: JsMsg, item: number, edit: EditEnvelope, msgId: string): Promise<void> {
    if (this.erasedAfter(edit.tenant, edit.docId, edit.ingestTs)) {
      // Dropped, not dead-lettered: a dead letter keeps the update's bytes, the erased content.
      this.metrics.updates.inc({ outcome: 'erased' })
      return
    }
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
      if (cached.doc.store.pendingStructs || cached.doc.store.pendingDs) this.loadedPending.add(docKey(edit.tenant, edit.docId))
    }
    this.cache.pin(cached)
    let verdict: Verdict
    try {
      verdict = judgeAndApply(cached.doc, cached.owners, edit)
    } catch (err) {
      // A check of ours throwing on content it did not foresee: refused like an update Yjs throws
      // on. Thrown out of here it would fail the batch at every retry and stall the partition for
      // every tenant in it. The document may hold part of the update: rebuilt.
      verdict = { refusal: reasonOf(DeadLetterReason.Apply, err), rebuild: true }
    }
    if ('refusal' in verdict) {
      this.deadLetter(msg, item, edit, verdict.refusal)
      if (verdict.rebuild) await this.rebuild(edit.tenant, edit.docId)
      return
    }
    const { result, violation, summary, written } = verdict
    claimUnowned(cached.owners, written, edit.userId)
    if (violation) this.deadLetter(msg, item, edit, violation, true)
    const { outcome } = result
    this.metrics.updates.inc({ outcome })
    if (outcome === 'duplicate') {
      this.metrics.duplicateUpdates.inc({ tenant: edit.tenant })
      return
    }
    if (summary) this.cleanEvents.push(cleanEvent(this.stream, msg.seq, item, edit, summary))
    this.ops.push({ tenant: edit.tenant, docId: edit.docId, streamSeq: msg.seq, msgId, userId: edit.userId, edgeId: edit.edgeId, update: edit.update, status: outcome, ingestTs: edit.ingestTs, eventTs: edit.eventTs ?? edit.ingestTs })
    const k = docKey(edit.tenant, edit.docId)
    if (outcome === 'pending' && !this.pendingSources.get(k)) {
      this.pendingSources.set(k, { stream: this.stream, streamSeq: msg.seq, item, subject: msg.subject, tenant: edit.tenant, docId: edit.docId, payload: encodeEnvelope(edit) })
    }
    const entry = this.touched.get(k) ?? { cached, ops: 0, lastStreamSeq: cached.lastStreamSeq }
    entry.ops += 1
    // The highest, not the last: a redelivered update can come after later ones (worker.ts).
    entry.lastStreamSeq = Math.max(entry.lastStreamSeq, msg.seq)
    this.touched.set(k, entry)
  }

  /**
   * States to write: documents that are new, have gathered `compactEveryOps` ops since their
   * last state, or hold ops uncompacted for longer than the cache's `compactAfterMs` (touched by
   * this batch or not: a quiet document must not keep its op-log tail forever) — at most
   * MAX_COMPACTIONS_PER_BATCH, so documents that reach the limit together (opened together,
   * typed alike) spread their rewrites over several commits.
   */
  docRows(): DocRow[] {
    const touched = [...this.touched.values()].filter(({ cached, ops }) => !cached.compacted || cached.uncompacted + ops >= this.compactEveryOps || this.cache.isAged(cached))
    const aged = this.cache.aged(MAX_COMPACTIONS_PER_BATCH, (k) => this.touched.has(k)).map((cached) => ({ cached, ops: 0, lastStreamSeq: cached.lastStreamSeq }))
    const due = [...touched, ...aged].slice(0, MAX_COMPACTIONS_PER_BATCH)
    const rows = due.map(({ cached, ops, lastStreamSeq }) => ({
      tenant: cached.tenant,
      docId: cached.docId,
      state: Y.encodeStateAsUpdate(cached.doc),
      stateVector: Y.encodeStateVector(cached.doc),
      lastStreamSeq,
      ops: cached.uncompacted + ops,
      // Rewritten only when a writer was added: a document's writers can number thousands.
      clientUsers: cached.owners.size > cached.ownersStored ? ownersJson(cached.owners) : null,
    }))
    this.compacting = due.map(({ cached }, i) => ({ cached, stateBytes: rows[i]!.state.byteLength, owners: cached.owners.size }))
    return rows
  }

  /** After the commit: what each touched doc has stored now, and its bytes in memory (doc-cache.ts). */
  committed(): void {
    const written = new Map<string, { bytes: number; ingestTs: number }>()
    for (const op of this.ops) {
      const k = docKey(op.tenant, op.docId)
      const w = written.get(k) ?? { bytes: 0, ingestTs: 0 }
      w.bytes += op.update.byteLength
      w.ingestTs = Math.max(w.ingestTs, op.ingestTs)
      written.set(k, w)
    }
    for (const [k, { cached, ops, lastStreamSeq }] of this.touched) this.cache.committedOps(cached, ops, written.get(k)?.bytes ?? 0, lastStreamSeq, written.get(k)?.ingestTs ?? 0)
    for (const { cached, stateBytes, owners } of this.compacting) this.cache.compactedState(cached, stateBytes, owners)
    this.metrics.compactions.inc(this.compacting.length)
    // Counted here, after the commit: a batch that fails is retried and would count its ops twice.
    for (const op of this.ops) if (op.ingestTs - op.eventTs > this.lateAfterMs) this.metrics.lateUpdates.inc({ tenant: op.tenant })
  }

  /** After the commit: what core publishes (dead letters, cleaned events) and the touched docs' pending state. */
  feeds(): BatchFeeds {
    const pending: PendingDoc[] = []
    const settled: BatchFeeds['settled'] = []
    for (const [k, { cached }] of this.touched) {
      const { tenant, docId } = cached
      if (cached.doc.store.pendingStructs || cached.doc.store.pendingDs) pending.push({ tenant, docId, source: this.pendingSources.get(k) ?? null })
      else settled.push({ tenant, docId, ...(this.loadedPending.has(k) && { loadedPending: true }) })
    }
    return { deadLetters: this.deadLetters, cleanEvents: this.cleanEvents, pending, settled }
  }

  /**
   * After the commit: the updates it did not store (`fenced`: store.ts fencedKey; their document
   * is deleted, or was erased after they came) count as refused, with no cleaned event. Their
   * documents' in-memory copies are stale; the caller drops them.
   */
  fencedOut(fenced: Set<string>, items: readonly DecodedItem[]): { tenant: string; docId: string }[] {
    if (fenced.size === 0) return []
    const gone = new Map<string, { tenant: string; docId: string }>()
    for (const d of items) {
      if (!('msgId' in d) || !fenced.has(fencedKey(d.edit.tenant, d.edit.docId, d.msgId))) continue
      this.refused.add(itemKey(d.msg.seq, d.item))
      gone.set(docKey(d.edit.tenant, d.edit.docId), { tenant: d.edit.tenant, docId: d.edit.docId })
      this.metrics.updates.inc({ outcome: 'fenced' })
    }
    // Refused before (dead letters) had no cleaned event: only the fenced ones go.
    for (let i = this.cleanEvents.length - 1; i >= 0; i--) if (this.refused.has(itemKey(this.cleanEvents[i]!.sourceSeq, this.cleanEvents[i]!.item))) this.cleanEvents.splice(i, 1)
    return [...gone.values()]
  }

  /** Replaces a doc Yjs threw on with its stored state plus this batch's ops for it. */
  private async rebuild(tenant: string, docId: string): Promise<void> {
    this.metrics.docRebuilds.inc({ tenant })
    // Out of the cache while the stored state loads: an edge's state request must not get it.
    this.cache.evict(tenant, docId)
    const cached = this.cache.add(tenant, docId, await this.loadDoc(tenant, docId))
    this.cache.pin(cached)
    for (const op of this.ops) {
      if (op.tenant !== tenant || op.docId !== docId) continue
      claimUnowned(cached.owners, writtenClients(op.update, heldIn(cached.doc)), op.userId)
      Y.applyUpdate(cached.doc, op.update)
    }
    const entry = this.touched.get(docKey(tenant, docId))
    if (entry) entry.cached = cached
  }
}
