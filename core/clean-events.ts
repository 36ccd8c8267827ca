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
 * The CLEAN messages of a commit's events: one per tenant (at most MAX_CLEAN_EVENTS_PER_MESSAGE
 * events each), events in source stream order, id from the first event and the count.
 */
export function cleanMessages(events: CleanEvent[]): FeedMessage[] {
  const byTenant = new Map<string, CleanEvent[]>()
  for (const e of events) {
    const list = byTenant.get(e.tenant)
    if (list) list.push(e)
    else byTenant.set(e.tenant, [e])
  }
  const messages: FeedMessage[] = []
  for (const [tenant, list] of byTenant) {
    const subject = cleanSubject(tenant)
    for (let at = 0; at < list.length; at += MAX_CLEAN_EVENTS_PER_MESSAGE) {
      const chunk = list.slice(at, at + MAX_CLEAN_EVENTS_PER_MESSAGE)
      messages.push({ subject, msgId: cleanMsgId(chunk[0]!.sourceStream, chunk[0]!, chunk.length), data: encodeCleanEventBatch({ v: 1, tenant, events: chunk }) })
    }
  }
  return messages
}
