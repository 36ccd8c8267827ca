import { MSG_ID_HEADER, SAVED_NOTICE_HEADER } from '../contracts/mod.ts'
import type { DecodedItem } from './batch.ts'
import { docKey } from './doc-cache.ts'
import type { CompactedState } from './snapshots.ts'
import type { DocRow, OpRow } from './store.ts'

// What a partition's commit tells others after it: the edges (the "saved" signal) and the
// snapshot writer (the states it wrote).

/**
 * The Nats-Msg-Ids of a committed batch's messages by publishing edge: messages whose every
 * update is in the op log now (applied, or committed before) and whose edge asked to hear of
 * them (SAVED_NOTICE_HEADER). One with a dead-lettered update is left out: that edit is not saved.
 */
export function committedByEdge(decoded: DecodedItem[]): Map<string, string[]> {
  const failed = new Set(decoded.filter((d) => 'failure' in d).map((d) => d.msg.seq))
  const byEdge = new Map<string, string[]>()
  const seen = new Set<number>()
  for (const d of decoded) {
    if (failed.has(d.msg.seq) || seen.has(d.msg.seq) || !d.edit || !d.msg.headers?.has(SAVED_NOTICE_HEADER)) continue
    seen.add(d.msg.seq)
    const msgId = d.msg.headers?.get(MSG_ID_HEADER)
    if (!msgId) continue
    const ids = byEdge.get(d.edit.edgeId) ?? []
    ids.push(msgId)
    byEdge.set(d.edit.edgeId, ids)
  }
  return byEdge
}

/** The states a commit wrote, each with the ingest time of its newest update (in this batch: its document was touched). */
export function compactedStates(docs: DocRow[], ops: OpRow[]): CompactedState[] {
  const newest = new Map<string, number>()
  for (const op of ops) {
    const k = docKey(op.tenant, op.docId)
    newest.set(k, Math.max(newest.get(k) ?? 0, op.ingestTs))
  }
  return docs.map((d) => ({ tenant: d.tenant, docId: d.docId, state: d.state, lastStreamSeq: d.lastStreamSeq, lastIngestTs: newest.get(docKey(d.tenant, d.docId)) ?? Date.now() }))
}
