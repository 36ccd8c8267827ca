import { CloseCode } from './close-codes.ts'

/**
 * The edge's admission limits. Each has one answer: a close code for a socket that is open
 * (stock clients stop on 4400-4499 and reconnect on anything else) and an HTTP status for a
 * refused upgrade or an HTTP ingest request. Limits checked before a socket is upgraded have no
 * close code: the upgrade is answered with the status, which a stock client sees as a failed
 * connect and retries with its growing backoff.
 */
export const Limit = {
  /** Updates per second one socket may send, sustained. */
  ConnectionUpdates: 'connection-updates',
  /** Frame bytes per second one socket may send, sustained. */
  ConnectionBytes: 'connection-bytes',
  /** Requests (sync step 1, query-awareness) per second one socket may send, sustained: each makes the edge encode a reply. */
  ConnectionRequests: 'connection-requests',
  /** Updates per second of one tenant, across the deployment (shared by the live edges). */
  TenantUpdates: 'tenant-updates',
  /** Update bytes per second of one tenant, across the deployment (shared by the live edges). */
  TenantBytes: 'tenant-bytes',
  /** Sockets one user may hold on one edge. */
  UserConnections: 'user-connections',
  /** Connects (socket upgrades and HTTP ingest requests) per second from one IP address. */
  IpConnects: 'ip-connects',
  /** Connects waiting for their token check, from one IP address and on the whole edge. */
  PendingAdmissions: 'pending-admissions',
  /** Bytes a socket may send before its token is checked (an HTTP ingest body pauses there instead). */
  UnauthenticatedBytes: 'unauthenticated-bytes',
  /** Size a document may grow to. */
  DocumentBytes: 'document-bytes',
  /**
   * A user one of whose socket updates did not apply (closed with 4422) cannot connect to that
   * edge for a while: each such update costs the room a rebuild from the whole document.
   */
  PoisonedUser: 'poisoned-user',
} as const
export type Limit = (typeof Limit)[keyof typeof Limit]

export interface LimitAnswer {
  /** Close code for an open socket; null when the limit is checked before the upgrade. */
  close: CloseCode | null
  /** HTTP status for a refused upgrade or ingest request. */
  http: number
}

export const LIMIT_ANSWERS: Record<Limit, LimitAnswer> = {
  [Limit.ConnectionUpdates]: { close: CloseCode.RateLimited, http: 429 },
  [Limit.ConnectionBytes]: { close: CloseCode.RateLimited, http: 429 },
  [Limit.ConnectionRequests]: { close: CloseCode.RateLimited, http: 429 },
  // The tenant as a whole is over: the socket reconnects and resyncs later, its edits kept.
  [Limit.TenantUpdates]: { close: CloseCode.TryAgainLater, http: 429 },
  [Limit.TenantBytes]: { close: CloseCode.TryAgainLater, http: 429 },
  [Limit.UserConnections]: { close: CloseCode.TooManyConnections, http: 429 },
  [Limit.IpConnects]: { close: null, http: 429 },
  [Limit.PendingAdmissions]: { close: null, http: 503 },
  // A stock client sends far less before its token is checked; it reconnects and resyncs.
  [Limit.UnauthenticatedBytes]: { close: CloseCode.TryAgainLater, http: 429 },
  [Limit.DocumentBytes]: { close: CloseCode.DocumentTooLarge, http: 413 },
  // A stock client stops at 4422 and never meets it; a reconnecting attacker is refused before any token work.
  [Limit.PoisonedUser]: { close: null, http: 429 },
}
