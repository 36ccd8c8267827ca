import { MAX_CLEAN_EVENTS_PER_MESSAGE, cleanMsgId, cleanSubject, encodeCleanEventBatch, type CleanEvent, type EditEnvelope } from '../contracts/mod.ts'
import type { ApplySummary } from './apply.ts'
import type { FeedMessage } from './feed-publisher.ts'

/**
 * The cleaned event of an applied update (contracts/clean-events.ts), from its envelope and what
 * applying it changed (apply.ts ApplySummary: no second decode of the update). Core never applies
 * a committed update twice (worker.ts skips what the op log holds), so a redelivery or a replay
 * yields no second event; a republished message is dropped by its id (contracts cleanMsgId).
 */
export function cleanEvent(stream: string, streamSeq: number, item: number, edit: EditEnvelope, summary: ApplySummary): CleanEvent {
  return {
    v: 1,
    tenant: edit.tenant,
    docId: edit.docId,
    userId: edit.userId,
    clients: summary.clients,
    eventTs: edit.eventTs ?? edit.ingestTs,
    ingestTs: edit.ingestTs,
    opKinds: summary.opKinds,
    sizes: { updateBytes: edit.update.byteLength, insertedChars: summary.insertedChars, deleted: summary.deleted },
    sourceStream: stream,
    sourceSeq: streamSeq,
    item,
  }
}

/**
 * The CLEAN messages of a commit's events (in source order): one per source stream message (at
 * most MAX_CLEAN_EVENTS_PER_MESSAGE events each), id from its first event (contracts cleanMsgId).
 */
export function cleanMessages(events: CleanEvent[]): FeedMessage[] {
  const messages: FeedMessage[] = []
  let chunk: CleanEvent[] = []
  const flush = () => {
    const first = chunk[0]
    if (!first) return
    messages.push({ subject: cleanSubject(first.tenant), msgId: cleanMsgId(first.sourceStream, first), data: encodeCleanEventBatch({ v: 1, tenant: first.tenant, events: chunk }) })
    chunk = []
  }
  for (const e of events) {
    const first = chunk[0]
    if (first && (first.sourceSeq !== e.sourceSeq || first.sourceStream !== e.sourceStream || chunk.length === MAX_CLEAN_EVENTS_PER_MESSAGE)) flush()
    chunk.push(e)
  }
  flush()
  return messages
}
