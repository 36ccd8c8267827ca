import { deadLetterMsgId, deadLetterReasonClass, deadLetterSubject, encodeDeadLetterEvent } from '../contracts/mod.ts'
import type { FeedMessage } from './feed-publisher.ts'
import type { DeadLetterRow } from './store.ts'

/**
 * A dead_letters row as a message of the dead-letter stream (contracts/dead-letters.ts): the same
 * reason, tenant, doc, source stream sequence and item, and the original bytes. Its id is its
 * source update's, so a redelivery or replay of that update never adds a second message within
 * the dedup window (and core does not dead-letter a committed update twice in any case:
 * worker.ts skips what dead_letters holds).
 */
export function deadLetterMessage(row: DeadLetterRow, at = Date.now()): FeedMessage {
  const reasonClass = deadLetterReasonClass(row.reason)
  return {
    subject: deadLetterSubject(row.tenant, reasonClass),
    msgId: deadLetterMsgId(row.stream, row.streamSeq, row.item, reasonClass),
    data: encodeDeadLetterEvent({ v: 1, reason: row.reason, tenant: row.tenant, docId: row.docId, sourceStream: row.stream, sourceSeq: row.streamSeq, item: row.item, subject: row.subject, payload: row.payload, at }),
  }
}
