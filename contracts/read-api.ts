import { z } from 'zod'
import { UserId } from './ids.ts'

/**
 * Staleness headers on every read answer about a document (core's read API, port 8081): the
 * stream sequence of the last update applied to that document (AGG's sequence, as the op log
 * keeps it) and the time core committed it (ISO 8601). The answer holds at least every update up
 * to that sequence. Absent on answers that name no document of the tenant (401, 403, 404).
 */
export const LAST_SEQ_HEADER = 'x-docflow-last-seq'
export const LAST_SEQ_TIME_HEADER = 'x-docflow-last-seq-time'

/**
 * Heavy reads — `state?at=`, history, blame and rollback replay or decode op-log rows — share
 * core's event loop with every tenant's commits, so a core serves a bounded number at once
 * (CORE_MAX_HEAVY_READS, one tenant at most half of them) and answers the others READ_BUSY_STATUS with a
 * `Retry-After` of READ_BUSY_RETRY_AFTER_S seconds: the core is busy, not the caller wrong.
 */
export const READ_BUSY_STATUS = 503
export const READ_BUSY_RETRY_AFTER_S = 1

/**
 * While core cannot reach PostgreSQL (refused, dropped, shutting down, starting up, out of
 * connections), reads answer READ_UNAVAILABLE_STATUS with a `Retry-After` of
 * READ_UNAVAILABLE_RETRY_AFTER_S seconds: an outage that ends on its own, not the caller's mistake.
 * Longer than READ_BUSY_RETRY_AFTER_S: a database restart or failover takes seconds, a heavy read
 * slot frees in less.
 */
export const READ_UNAVAILABLE_STATUS = 503
export const READ_UNAVAILABLE_RETRY_AFTER_S = 5

/** Largest stream sequence a point in time names: 15 digits, exact as a JS number (a 16-digit one may not be). */
export const MAX_POINT_SEQ = 999_999_999_999_999
/** A stream sequence in a point in time's text (`?at=`, rollback's `"to": "<seq>"`): 1 to 15 digits. */
export const PointSeqText = z.string().regex(/^\d{1,15}$/)
/**
 * A time the read API takes (`?at=`, rollback's `to` and `since`): an RFC 3339 (ISO 8601) date-time,
 * seconds and zone (Z or ±hh:mm) included, since one without a zone would be read in the server's
 * timezone; zod checks the calendar (month lengths, leap years): 2026-02-30 is refused, not read as 2 March.
 */
export const PointTime = z.iso.datetime({ offset: true })

/** `GET /v1/docs/<docId>/state?at=<ISO time | stream seq>`: the document as it was then. */
export const STATE_AT_PARAM = 'at'
/** On a point-in-time answer: the stream sequence of the last update the returned state holds. */
export const STATE_SEQ_HEADER = 'x-docflow-state-seq'

/** `GET /v1/docs/<docId>/history` query parameters. */
export const HistoryParam = {
  /** Entries per page: 1 to HISTORY_MAX_LIMIT, default HISTORY_DEFAULT_LIMIT (fewer past HISTORY_MAX_PAGE_BYTES). */
  Limit: 'limit',
  /** The previous page's `next`: this page starts with the entry after it (older). */
  Before: 'before',
} as const
export const HISTORY_DEFAULT_LIMIT = 50
export const HISTORY_MAX_LIMIT = 500
/**
 * Update bytes one history page reads at most (to find each entry's Yjs clients): a page ends
 * early, with `next`, once its entries' `bytes` reach this; it always holds at least one entry.
 */
export const HISTORY_MAX_PAGE_BYTES = 4 * 1024 ** 2

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

/** A page of history, newest first; `next` is the `before` cursor of the next (older) page, null on the last (a page may be short and still have a next). */
export const HistoryPage = z.object({
  entries: z.array(HistoryEntry),
  next: z.string().nullable(),
})
export type HistoryPage = z.infer<typeof HistoryPage>

/** `GET /v1/docs/<docId>/blame?type=<root name>&at=<point>`: which user wrote each span of a text. */
export const BlameParam = {
  /** The root Y.Text to blame, by name: 1 to BLAME_MAX_TYPE_CHARS characters, default DEFAULT_TEXT_TYPE. */
  Type: 'type',
  /** Optional point (ISO time | stream seq, as `state?at=`): blame the text as it was then. */
  At: STATE_AT_PARAM,
} as const
/** The root Y.Text the stock clients, the demo and the load test type into. */
export const DEFAULT_TEXT_TYPE = 't'
export const BLAME_MAX_TYPE_CHARS = 256

/** A run of the text inserted by one user at one time (adjacent characters with the same user and ts are one span). */
export const BlameSpan = z.object({
  text: z.string(),
  /** Offset of the span in the text (UTF-16 units, as Y.Text counts). */
  index: z.number().int().nonnegative(),
  /** The token's `sub` of the op-log update that first carried these characters; null only if the op log lacks it. */
  user: z.string().nullable(),
  /** Event time of that update (ISO 8601; the ingest time when the client gave none); null with user null. */
  ts: z.iso.datetime().nullable(),
})
export type BlameSpan = z.infer<typeof BlameSpan>

export const BlameAnswer = z.object({
  /** The root Y.Text blamed. */
  type: z.string(),
  /** Stream sequence of the last update the blamed text holds. */
  seq: z.number().int().positive(),
  spans: z.array(BlameSpan),
})
export type BlameAnswer = z.infer<typeof BlameAnswer>

/** Largest body of `POST …/rollback`. */
export const ROLLBACK_MAX_BODY_BYTES = 4_096

/**
 * `POST /v1/docs/<docId>/rollback` (editors): `{"to": "<ISO time | seq>"}` restores the document
 * to what it was then; `{"user": "<sub>", "since": "<ISO time>"}` reverts that user's changes
 * ingested after `since`. Either is applied as a new update by the caller.
 */
export const RollbackRequest = z.union([
  // `to` is what parsePointInTime takes (a sequence past MAX_POINT_SEQ is a bad request, not an unprocessable state).
  z.strictObject({ to: z.union([z.number().int().positive().max(MAX_POINT_SEQ), PointSeqText, PointTime]) }),
  z.strictObject({ user: UserId, since: PointTime }),
])
export type RollbackRequest = z.infer<typeof RollbackRequest>

/** The 202 answer of a rollback. */
export const RollbackAnswer = z.object({
  /** 'accepted': the rollback update is stored in JetStream; 'unchanged': there was nothing to revert, no update sent. */
  status: z.enum(['accepted', 'unchanged']),
  /** The last stream sequence of the document the rollback was computed against. */
  basedOnSeq: z.number().int().positive(),
  /** Id of the rollback update in the op log (op_log.msg_id: editMsgId of its bytes; absent when unchanged). */
  msgId: z.string().optional(),
  /** True when the same rollback had been stored already (same request against the same state). */
  duplicate: z.boolean().optional(),
  /** Size of the rollback update in bytes (0 when unchanged). */
  bytes: z.number().int().nonnegative(),
  /** The Idempotency-Key it went to the edge with (derived from the request and basedOnSeq). */
  idempotencyKey: z.string().optional(),
})
export type RollbackAnswer = z.infer<typeof RollbackAnswer>
