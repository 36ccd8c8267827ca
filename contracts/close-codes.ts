/**
 * WebSocket close codes the edge sends. y-websocket stops reconnecting on 4400-4499 (the
 * client must change something); every other code makes it reconnect and resync.
 */
export const CloseCode = {
  /** Edge is draining for a restart; reconnect elsewhere. */
  ServiceRestart: 1012,
  /** A dependency (JetStream, state load) failed; reconnect and resync, nothing is lost. */
  TryAgainLater: 1013,
  /** Frame or URL the protocol does not allow. */
  BadRequest: 4400,
  /** Missing, forged or expired token. */
  Unauthorized: 4401,
  /** Token is valid but does not cover this document, or its tenant is suspended or unknown. */
  Forbidden: 4403,
  /** A frame, update or presence state above the edge's size limit (below NATS max_payload); do not resend it. */
  MessageTooBig: 4413,
  /** The document was deleted (or erased) by an operator: it is hidden until restored; do not reconnect. */
  DocumentDeleted: 4410,
  /** The document passed its size limit (contracts/limits.ts): no more edits to it are taken. */
  DocumentTooLarge: 4414,
  /** A well-formed Yjs update that does not apply to the document (poisoned), or core dead-lettered it (a socket asking for "saved"); do not resend it. */
  InvalidUpdate: 4422,
  /** The socket sent updates, requests or bytes above its sustained rate (contracts/limits.ts): no human types that fast. */
  RateLimited: 4429,
  /** The user already holds the most sockets one edge allows a user (contracts/limits.ts). */
  TooManyConnections: 4430,
  /** The tenant's storage quota is full; the client keeps its edits and retries (4500-4599 reconnect). */
  QuotaExceeded: 4507,
  /** The client stopped reading and its send buffer passed the limit; it reconnects and resyncs by state vector. */
  SlowClient: 4508,
} as const
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode]
