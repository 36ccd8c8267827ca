// Checks both blob store backends make before touching storage, so a key or metadata one
// backend would take and the other refuse fails alike on both.
import { BlobMetadata, isBlobKey, isBlobKeyPrefix } from '../../contracts/mod.ts'
import { BlobKeyError, BlobMetadataError } from './errors.ts'

/** Throws BlobKeyError unless `key` is one both backends hold alike. */
export function checkBlobKey(key: string): void {
  if (!isBlobKey(key)) throw new BlobKeyError(`bad blob key ${JSON.stringify(key)}: "/"-separated segments of A-Za-z0-9._=~-, none empty or starting with "."`)
}

/** Throws BlobKeyError unless `prefix` is "", a key, or a key and "/". */
export function checkBlobKeyPrefix(prefix: string): void {
  if (!isBlobKeyPrefix(prefix)) throw new BlobKeyError(`bad blob key prefix ${JSON.stringify(prefix)}`)
}

/** Throws BlobMetadataError unless S3 would keep `metadata` exactly. */
export function checkBlobMetadata(metadata: BlobMetadata): BlobMetadata {
  const parsed = BlobMetadata.safeParse(metadata)
  if (!parsed.success) throw new BlobMetadataError(`bad blob metadata: ${parsed.error.issues.map((i) => i.message).join('; ')}`, { cause: parsed.error })
  return parsed.data
}
