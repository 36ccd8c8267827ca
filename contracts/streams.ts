import { editPartitionFilter } from './subjects.ts'


/** Window within which a republished Nats-Msg-Id is dropped by JetStream. */
export const EDIT_DEDUP_WINDOW_MS = 120_000

/** Raw edits stay in the stream this long; core beats it by far, the archive keeps a year. */
export const EDIT_STREAM_MAX_AGE_MS = 7 * 24 * 3_600_000

/** AGG only carries edits to core, which reads them within milliseconds; tenant streams keep a week. */
export const AGG_MAX_AGE_MS = 3 * 24 * 3_600_000

/** Durable name of the core consumer that owns one partition. */
export function coreConsumerName(partition: number): string {
  return `core-p${String(partition).padStart(2, '0')}`
}

export const corePartitions = (partitions: number): { partition: number; durable: string; filter: string }[] =>
  Array.from({ length: partitions }, (_, partition) => ({
    partition,
    durable: coreConsumerName(partition),
    filter: editPartitionFilter(partition),
  }))

/** JetStream API subject of the message-get request (by sequence, or `next_by_subj` from one). */
export const streamMessageGetSubject = (stream: string) => `$JS.API.STREAM.MSG.GET.${stream}`

/** The header carrying a message's dedup id (JetStream's, kept on the sourced copy in AGG). */
export const MSG_ID_HEADER = 'Nats-Msg-Id'

/**
 * Set ('1') by an edge on a stream message carrying an update whose socket asked for the saved
 * signal: core sends CommittedNotices only for such messages, so stock clients cost no notice,
 * no decode and no bookkeeping. Kept on the sourced copy in AGG, like MSG_ID_HEADER.
 */
export const SAVED_NOTICE_HEADER = 'DocFlow-Saved-Notice'

/**
 * Core's feeds in the service account (provisioned like AGG, scripts/lib/provisioner.ts): the
 * dead-letter stream (contracts/dead-letters.ts) and the CLEAN stream of applied updates
 * (contracts/clean-events.ts). Core publishes to both after its PostgreSQL commit; the tables
 * (dead_letters, op_log) stay the record, the streams are the feed sinks read.
 */
export const DLQ_STREAM = 'DLQ'
export const CLEAN_STREAM = 'CLEAN'

/** Window within which a republished feed message id is dropped (same as the edit streams'). */
export const FEED_DEDUP_WINDOW_MS = EDIT_DEDUP_WINDOW_MS

/** Dead letters stay a month in the stream (the dead_letters table keeps them for good). */
export const DLQ_MAX_AGE_MS = 30 * 24 * 3_600_000

/** Cleaned events stay a week: sinks read them within minutes, the op log is the record. */
export const CLEAN_MAX_AGE_MS = 7 * 24 * 3_600_000
