/** The PostgreSQL session holding a partition's lease ended; the worker must stop and re-acquire. */
export class LeaseLostError extends Error {
  override name = 'LeaseLostError'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
  }
}
export const isLeaseLostError = (e: unknown): e is LeaseLostError => e instanceof LeaseLostError
