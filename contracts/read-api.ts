import { z } from 'zod'

/**
 * Staleness headers on every read answer about a document (core's read API, port 8081): the
 * stream sequence of the last update applied to that document (AGG's sequence, as the op log
 * keeps it) and the time core committed it (ISO 8601). The answer holds at least every update up
 * to that sequence. Absent on answers that name no document of the tenant (401, 403, 404).
 */
export const LAST_SEQ_HEADER = 'x-docflow-last-seq'
export const LAST_SEQ_TIME_HEADER = 'x-docflow-last-seq-time'

/** `GET /v1/docs/<docId>/state?at=<ISO time | stream seq>`: the document as it was then. */
export const STATE_AT_PARAM = 'at'
/** On a point-in-time answer: the stream sequence of the last update the returned state holds. */
export const STATE_SEQ_HEADER = 'x-docflow-state-seq'

/** `GET /v1/docs/<docId>/history` query parameters. */
export const HistoryParam = {
  /** Entries per page: 1 to HISTORY_MAX_LIMIT, default HISTORY_DEFAULT_LIMIT. */
  Limit: 'limit',
  /** The previous page's `next`: this page starts with the entry after it (older). */
  Before: 'before',
} as const
export const HISTORY_DEFAULT_LIMIT = 50
export const HISTORY_MAX_LIMIT = 500

/** One update of a document's op log, as history shows it. */
export const HistoryEntry = z.object({
  /** Stream sequence (AGG) of the message that carried it; the updates of one batch message share it. */
  seq: z.number().int().positive(),
  /** The token's `sub` that sent it. */
  user: z.string(),
  /** Ingest time: when the edge took it (ISO 8601). */
  ts: z.iso.datetime(),
  /** Event time: when the client made it (ISO 8601; HTTP ingest's X-Event-Time, else the ingest time). */
  eventTs: z.iso.datetime(),
  /** Size of the Yjs update in bytes. */
  bytes: z.number().int().nonnegative(),
  /** Yjs client ids whose items the update carries, ascending (none for a delete-only update). */
  clients: z.array(z.number().int().nonnegative()),
  /** 'pending': when committed, Yjs held it until the clocks it depends on arrived. */
  status: z.enum(['applied', 'pending']),
})
export type HistoryEntry = z.infer<typeof HistoryEntry>

/** A page of history, newest first; `next` is the `before` cursor of the next (older) page, null on the last. */
export const HistoryPage = z.object({
  entries: z.array(HistoryEntry),
  next: z.string().nullable(),
})
export type HistoryPage = z.infer<typeof HistoryPage>
