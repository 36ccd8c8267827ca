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
