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
