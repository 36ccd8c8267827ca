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
