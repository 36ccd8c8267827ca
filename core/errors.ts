/** The PostgreSQL session holding a partition's lease ended; the worker must stop and re-acquire. */
export class LeaseLostError extends Error {
  override name = 'LeaseLostError'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
  }
}
export const isLeaseLostError = (e: unknown): e is LeaseLostError => e instanceof LeaseLostError

/**
 * A delivery of the partition's consumer went missing (a gap in delivery sequences) and was not
 * filled in time; the worker restarts the consumer from its committed checkpoint.
 */
export class DeliveryGapError extends Error {
  override name = 'DeliveryGapError'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
  }
}
export const isDeliveryGapError = (e: unknown): e is DeliveryGapError => e instanceof DeliveryGapError

/**
 * The stream no longer holds messages a partition has not committed (AGG discarded or expired
 * them): the partition refuses to go on past the hole until an operator repairs it.
 */
export class StreamHoleError extends Error {
  override name = 'StreamHoleError'
  constructor(
    readonly hole: { stream: string; durable: string; fromSeq: number; toSeq: number },
    options?: { cause?: unknown },
  ) {
    super(`${hole.stream} lost sequences ${hole.fromSeq}..${hole.toSeq}, which may hold uncommitted messages of ${hole.durable}; refusing to continue past them`, options)
  }
}
export const isStreamHoleError = (e: unknown): e is StreamHoleError => e instanceof StreamHoleError

/** Core's configuration contradicts what its database was first used with; it must not start. */
export class DeploymentMismatchError extends Error {
  override name = 'DeploymentMismatchError'
}

/** A document delete, restore or erase that cannot be done as asked (no such document, already deleted, not deleted). */
export class DocDeletionError extends Error {
  override name = 'DocDeletionError'
  constructor(
    message: string,
    readonly kind: 'not-found' | 'already-deleted' | 'not-deleted',
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}
export const isDocDeletionError = (e: unknown): e is DocDeletionError => e instanceof DocDeletionError

/** Applying an update would move a document's version backwards (apply.ts versionTransition). */
export class VersionRegressionError extends Error {
  override name = 'VersionRegressionError'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
  }
}
export const isVersionRegressionError = (e: unknown): e is VersionRegressionError => e instanceof VersionRegressionError

/** SQLSTATEs of a server that cannot serve now: connection exceptions (class 08), admin or crash shutdown (57P01, 57P02), starting up (57P03), out of connections (53300). */
const PG_UNAVAILABLE_CODE = /^(08[0-9A-Z]{3}|57P0[123]|53300)$/
/** Socket errors on the way to PostgreSQL: refused, reset, timed out, unreachable, name not resolved. */
const SOCKET_ERROR_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN'])
/** pg's and pg-pool's errors for a connection lost or never made; they carry no code. */
const PG_CONNECTION_MESSAGE = /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error)/

/** True when `err` (or an error it wraps as `cause`) says PostgreSQL is out of reach, not that the request failed. */
export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e = err; e instanceof Error; e = e.cause) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string' && (PG_UNAVAILABLE_CODE.test(code) || SOCKET_ERROR_CODES.has(code))) return true
    if (PG_CONNECTION_MESSAGE.test(e.message)) return true
  }
  return false
}

/** SQLSTATEs of data PostgreSQL refuses to store: data exceptions (22), integrity (23), size limits (54). */
const PG_REFUSED_DATA_CODE = /^(22|23|54)...$/

const sqlState = (err: unknown): string | undefined => {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}

/** PostgreSQL refused the statement for its contents or size, or it ran past its timeout, not for the connection: a smaller one may pass. */
export function isRefusedStatement(err: unknown): boolean {
  const code = sqlState(err)
  return code !== undefined && (PG_REFUSED_DATA_CODE.test(code) || code === '57014')
}

/** PostgreSQL refused what the statement carries (not its time): storing the same rows again fails again. */
export function isRefusedData(err: unknown): boolean {
  const code = sqlState(err)
  return code !== undefined && PG_REFUSED_DATA_CODE.test(code)
}
