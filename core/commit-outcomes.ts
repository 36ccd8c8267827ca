import { MSG_ID_HEADER, SAVED_NOTICE_HEADER, type CommittedNotice } from '../contracts/mod.ts'
import type { DecodedItem } from './batch.ts'
import { docKey } from './doc-cache.ts'
import type { CompactedState } from './snapshots.ts'
import { itemKey, type DocRow, type OpRow, type ThroughOpIds } from './store.ts'

// What a partition's commit tells others after it: the edges (the "saved" signal) and the
// snapshot writer (the states it wrote).

/**
 * A committed batch's notices by publishing edge, for the messages whose edge asked to hear of
 * them (SAVED_NOTICE_HEADER): each message's Nats-Msg-Id, and apart the updates of it that were
 * dead-lettered instead of applied (`refused`, as itemKey): those edits are not saved, the
 * others of the message are (applied, or committed before).
 */
export function committedByEdge(decoded: DecodedItem[], refused: ReadonlySet<string>): Map<string, CommittedNotice> {
  const byEdge = new Map<string, CommittedNotice>()
  const refusedOf = new Map<number, number[]>()
  for (const d of decoded) {
    if (!refused.has(itemKey(d.msg.seq, d.item))) continue
    const items = refusedOf.get(d.msg.seq)
    if (items) items.push(d.item)
    else refusedOf.set(d.msg.seq, [d.item])
  }
  const seen = new Set<number>()
  for (const d of decoded) {
    if (seen.has(d.msg.seq) || !d.edit || !d.msg.headers?.has(SAVED_NOTICE_HEADER)) continue
    seen.add(d.msg.seq)
    const msgId = d.msg.headers?.get(MSG_ID_HEADER)
    if (!msgId) continue
    const notice = byEdge.get(d.edit.edgeId) ?? { msgIds: [], refused: [] }
    notice.msgIds.push(msgId)
    const items = refusedOf.get(d.msg.seq)
    if (items) notice.refused.push({ msgId, items })
    byEdge.set(d.edit.edgeId, notice)
  }
  return byEdge
}

/**
 * The states a commit wrote (those in `through`: a fenced one was not), each with the ingest time
 * of its newest update (in this batch: its document was touched).
 */
export function compactedStates(docs: DocRow[], ops: OpRow[], through: ThroughOpIds): CompactedState[] {
  const newest = new Map<string, number>()
  for (const op of ops) {
    const k = docKey(op.tenant, op.docId)
    newest.set(k, Math.max(newest.get(k) ?? 0, op.ingestTs))
  }
  return docs.flatMap((d) => {
    const k = docKey(d.tenant, d.docId)
    const throughOpId = through.get(k)
    return throughOpId === undefined ? [] : [{ tenant: d.tenant, docId: d.docId, state: d.state, lastStreamSeq: d.lastStreamSeq, throughOpId, lastIngestTs: newest.get(k) ?? Date.now() }]
  })
}
