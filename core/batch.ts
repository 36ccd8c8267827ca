import * as Y from 'yjs'
import type { JsMsg } from '@nats-io/jetstream'
import { decodeEnvelope, decodeFailureReason, editMsgId, parseEditSubject, type EditEnvelope } from '../contracts/mod.ts'
import { applyTracked } from './apply.ts'
import { docKey, type CachedDoc, type DocCache } from './doc-cache.ts'
import type { CoreMetrics } from './metrics.ts'
import type { DeadLetterRow, DocRow, OpRow } from './store.ts'

/** A stream message after schema checks: an edit, or the reason it cannot be one. */
export type DecodedMessage = { msg: JsMsg; edit: EditEnvelope; msgId: string } | { msg: JsMsg; failure: string; edit?: EditEnvelope }

export function decodeMessage(msg: JsMsg): DecodedMessage {
  let edit: EditEnvelope | undefined
  try {
    const subject = parseEditSubject(msg.subject)
    edit = decodeEnvelope(msg.data)
    if (edit.tenant !== subject.tenant || edit.docId !== subject.docId) throw new Error('envelope tenant/doc differ from the subject')
    Y.decodeUpdate(edit.update)
    return { msg, edit, msgId: editMsgId(edit.tenant, edit.docId, edit.update) }
  } catch (err) {
    return { msg, failure: decodeFailureReason(err), edit }
  }
}

const reasonOf = (prefix: string, err: unknown) => `${prefix}: ${err instanceof Error ? err.message : String(err)}`

/**
 * Folds one batch of a partition's messages into its documents and collects what the batch
 * commits: op-log rows, document states and dead letters.
 *
 * Invariants: every doc the batch touches stays pinned in the cache until the batch commits
 * (doc-cache.ts), so there is one copy of it; a message that cannot be applied — it does not
 * decode, or Yjs throws on it, or its document's committed state does not load — becomes a dead
 * letter with its reason and bytes and never blocks the partition; a document Yjs threw on is
 * rebuilt from its committed state plus the batch's earlier ops for it, since a throw can leave
 * the in-memory doc half-modified.
 */
export class BatchBuilder {
  readonly ops: OpRow[] = []
  readonly deadLetters: DeadLetterRow[] = []
  private readonly touched = new Map<string, { cached: CachedDoc; row: DocRow }>()

  constructor(
    private readonly stream: string,
    private readonly cache: DocCache,
    private readonly loadState: (tenant: string, docId: string) => Promise<Uint8Array | null>,
    private readonly metrics: CoreMetrics,
  ) {}

  get empty(): boolean {
    return this.ops.length === 0 && this.deadLetters.length === 0
  }

  /** Docs whose in-memory state is ahead of what is committed until this batch commits. */
  get touchedDocs(): CachedDoc[] {
    return [...this.touched.values()].map((t) => t.cached)
  }

  deadLetter(msg: JsMsg, edit: EditEnvelope | undefined, reason: string): void {
    this.deadLetters.push({ stream: this.stream, streamSeq: msg.seq, subject: msg.subject, tenant: edit?.tenant ?? null, docId: edit?.docId ?? null, reason, payload: msg.data })
    this.metrics.deadLetters.inc({ reason: reason.split(':')[0] })
  }

  async apply(msg: JsMsg, edit: EditEnvelope, msgId: string): Promise<void> {
    let cached = this.cache.get(edit.tenant, edit.docId)
    if (!cached) {
      // A failing read throws (the batch is retried); committed state Yjs cannot load is dead-lettered.
      const state = await this.loadState(edit.tenant, edit.docId)
      try {
        cached = this.cache.add(edit.tenant, edit.docId, state)
      } catch (err) {
        this.deadLetter(msg, edit, reasonOf('state', err))
        return
      }
    }
    this.cache.pin(cached)
    let outcome
    try {
      outcome = applyTracked(cached.doc, edit.update)
    } catch (err) {
      this.deadLetter(msg, edit, reasonOf('apply', err))
      await this.rebuild(edit.tenant, edit.docId)
      return
    }
    this.metrics.updates.inc({ outcome })
    if (outcome === 'duplicate') return
    this.ops.push({ tenant: edit.tenant, docId: edit.docId, streamSeq: msg.seq, msgId, userId: edit.userId, edgeId: edit.edgeId, update: edit.update, status: outcome, ingestTs: edit.ingestTs })
    const k = docKey(edit.tenant, edit.docId)
    const entry = this.touched.get(k) ?? { cached, row: { tenant: edit.tenant, docId: edit.docId, state: new Uint8Array(), stateVector: new Uint8Array(), lastStreamSeq: 0, ops: 0 } }
    entry.row.lastStreamSeq = msg.seq
    entry.row.ops += 1
    this.touched.set(k, entry)
  }

  /** Document rows to upsert, one per touched doc, with their state as of now. */
  docRows(): DocRow[] {
    return [...this.touched.values()].map(({ cached, row }) => ({ ...row, state: Y.encodeStateAsUpdate(cached.doc), stateVector: Y.encodeStateVector(cached.doc) }))
  }

  /** Replaces a doc Yjs threw on with its committed state plus this batch's ops for it. */
  private async rebuild(tenant: string, docId: string): Promise<void> {
    const cached = this.cache.add(tenant, docId, await this.loadState(tenant, docId))
    this.cache.pin(cached)
    for (const op of this.ops) if (op.tenant === tenant && op.docId === docId) Y.applyUpdate(cached.doc, op.update)
    const entry = this.touched.get(docKey(tenant, docId))
    if (entry) entry.cached = cached
  }
}
