/** The room could not get the document's state from core or a peer edge. */
export class RoomLoadError extends Error {
  override name = 'RoomLoadError'
}

/**
 * JetStream did not take an update (after retries); `cause` is the last NATS error. `quota`:
 * the tenant's storage is full; `too-big`: the update does not fit the server's max_payload
 * (only its writer must go: resending cannot help); `unavailable`: anything else (the client
 * should resync later).
 */
export class PublishError extends Error {
  override name = 'PublishError'
  constructor(
    message: string,
    readonly kind: 'quota' | 'too-big' | 'unavailable',
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}
export const isPublishError = (e: unknown): e is PublishError => e instanceof PublishError

/** Edge options that cannot work with the connected NATS server (checked at construction). */
export class EdgeOptionsError extends Error {
  override name = 'EdgeOptionsError'
}

/** The tenant directory could not answer in time (NATS slow or away); the socket should retry. */
export class TenantLookupError extends Error {
  override name = 'TenantLookupError'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
  }
}
