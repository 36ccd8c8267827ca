// Errors of the blob store (runtime/blobs). Each carries what failed in its message and the
// backend's own error as `cause`.

/** A key or list prefix outside the layout both backends accept (contracts/blobs.ts isBlobKey): a caller's bug, not retryable. */
export class BlobKeyError extends Error {
  override name = 'BlobKeyError'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
  }
}
export const isBlobKeyError = (e: unknown): e is BlobKeyError => e instanceof BlobKeyError

/** Metadata S3 could not keep as given (contracts/blobs.ts BlobMetadata), or a sidecar that is not metadata. */
export class BlobMetadataError extends Error {
  override name = 'BlobMetadataError'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
  }
}
export const isBlobMetadataError = (e: unknown): e is BlobMetadataError => e instanceof BlobMetadataError

/** The backend failed (disk, permissions, network, credentials, bucket): the operation may be retried. */
export class BlobStoreError extends Error {
  override name = 'BlobStoreError'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
  }
}
export const isBlobStoreError = (e: unknown): e is BlobStoreError => e instanceof BlobStoreError
