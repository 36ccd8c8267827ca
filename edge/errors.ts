/** The room could not get the document's state from core or a peer edge. */
export class RoomLoadError extends Error {
  override name = 'RoomLoadError'
}

/**
 * JetStream did not take an update (after retries); `cause` is the last NATS error. `quota`:
 * the tenant's storage is full; `unavailable`: anything else (the client should resync later).
 */
export class PublishError extends Error {
  override name = 'PublishError'
  constructor(
    message: string,
    readonly kind: 'quota' | 'unavailable',
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}
export const isPublishError = (e: unknown): e is PublishError => e instanceof PublishError
