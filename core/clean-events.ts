import { cleanMsgId, cleanSubject, encodeCleanEvent, type CleanEvent, type EditEnvelope } from '../contracts/mod.ts'
import type { ApplySummary } from './apply.ts'
import type { FeedMessage } from './feed-publisher.ts'

/**
 * The cleaned event of an applied update (contracts/clean-events.ts), from its envelope and what
 * applying it changed (apply.ts ApplySummary: no second decode of the update). Its message id is
 * its source stream sequence and item: a redelivery or replay of the update within the dedup
 * window never stores a second event, and core never applies a committed update twice in any case
 * (worker.ts skips what the op log holds); replays past the window reach consumers only if an
 * operator republishes, and consumers key events by (sourceStream, sourceSeq, item).
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

/** The last subject built: a batch's events mostly follow one document's (building one validates and escapes). */
let lastSubject = { tenant: '', docId: '', subject: '' }

export function cleanMessage(e: CleanEvent): FeedMessage {
  if (lastSubject.tenant !== e.tenant || lastSubject.docId !== e.docId) lastSubject = { tenant: e.tenant, docId: e.docId, subject: cleanSubject(e.tenant, e.docId) }
  return { subject: lastSubject.subject, msgId: cleanMsgId(e.sourceStream, e.sourceSeq, e.item), data: encodeCleanEvent(e) }
}
