// The blob store: snapshots now, the raw archive and analytics files later (shared/BRIEF.md
// "Blob store layout"). One interface, two backends chosen by config — a folder (fs-store.ts,
// the `npm start` default) and S3 (s3-store.ts) — holding the same keys (contracts/blobs.ts).
//
// Invariant, both backends: a key holds either nothing or one whole put's bytes — a reader
// never sees a partial blob — and list() yields only keys of completed puts, sorted.
import { join } from 'node:path'
import type { BlobMetadata } from '../../contracts/mod.ts'
import { ConfigError, type BlobStoreConfig } from '../config.ts'
import { FsBlobStore } from './fs-store.ts'
import { BlobStoreError } from './errors.ts'

export type { BlobMetadata } from '../../contracts/mod.ts'

export interface BlobInfo {
  /** Bytes of the blob. */
  size: number
  /** What put() was given; {} when nothing. */
  metadata: BlobMetadata
}

export interface BlobStore {
  /** Where the blobs are, for logs: the folder, or s3://bucket/prefix. */
  readonly location: string
  /** Stores `bytes` under `key`, replacing what was there, all or nothing. */
  put(key: string, bytes: Uint8Array, metadata?: BlobMetadata): Promise<void>
  /** The blob's bytes, or null when there is none. */
  get(key: string): Promise<Uint8Array | null>
  /** Size and metadata without the bytes, or null when there is none. */
  head(key: string): Promise<BlobInfo | null>
  /** Keys starting with `prefix` (a string prefix, as S3 matches), in byte order, fetched page by page. */
  list(prefix: string): AsyncIterable<string>
  /** Removes the blob; nothing there is not an error. */
  delete(key: string): Promise<void>
  /**
   * Removes the blobs (nothing there is not an error): S3 in requests of up to 1,000 keys, not
   * one per key. Returns the keys it could not remove, with why (a key outside the layout among
   * them, untouched); throws when a request failed as a whole (which of its keys went is then
   * unknown).
   */
  deleteMany(keys: readonly string[]): Promise<BlobDeleteFailure[]>
  /**
   * Tags the blob as replaced by a newer one (SUPERSEDED_SNAPSHOT_TAG), which the S3 bucket's
   * lifecycle rule expires by; nothing there is not an error. The folder store has no lifecycle
   * rule, so nothing reads a mark there: it does nothing (core's retention prunes both).
   */
  supersede(key: string): Promise<void>
  /**
   * Removes what puts that never finished left in the folder of `prefix` (a prefix ending in "/"),
   * and in its subfolders when `recursive` — content no key names, so no listing finds it. Returns
   * how many it removed. An erasure calls it: such leftovers hold the document's content.
   */
  deleteLeftovers(prefix: string, recursive: boolean): Promise<number>
  /** Releases the backend's connections; the store is unusable after. */
  close(): Promise<void>
}

export interface BlobDeleteFailure {
  key: string
  reason: string
}

export interface BlobStoreOptions {
  /** Keys per S3 ListObjectsV2 page. Default 1000 (S3's most). */
  listPageSize?: number
  /** Keys per S3 DeleteObjects request. Default 1000 (S3's most). */
  deleteBatchSize?: number
}

/** Keys deleteAll hands to one deleteMany (S3's most per request). */
const DELETE_ALL_BATCH = 1_000

/**
 * Deletes every key `keys` yields, DELETE_ALL_BATCH at a time, calling `progress` with the count
 * done after each batch; returns the count. Throws when a key stays (naming the first), so a
 * caller never reports a deletion done that is not.
 */
export async function deleteAll(blobs: BlobStore, keys: AsyncIterable<string> | Iterable<string>, progress: (done: number) => void = () => undefined): Promise<number> {
  let done = 0
  let batch: string[] = []
  const flush = async () => {
    const failures = await blobs.deleteMany(batch)
    if (failures.length > 0) throw new BlobStoreError(`${failures.length} of ${batch.length} blobs not deleted from ${blobs.location}, first ${failures[0]!.key}: ${failures[0]!.reason}`)
    done += batch.length
    batch = []
    progress(done)
  }
  for await (const key of keys) if (batch.push(key) === DELETE_ALL_BATCH) await flush()
  if (batch.length > 0) await flush()
  return done
}

/** The folder `npm start` keeps blobs in under its data folder (DOCFLOW_DATA_DIR). */
export function blobDirOf(dataDir: string): string {
  return join(dataDir, 'blobs')
}

/** The store the config names: S3 when it has a bucket, else the folder. S3's bucket must exist. */
export async function openBlobStore(config: BlobStoreConfig, options: BlobStoreOptions = {}): Promise<BlobStore> {
  if (config.s3Bucket !== undefined) {
    // Loaded only when used: the AWS SDK adds ~20 MB to a process's RSS (measured), and the
    // folder store, `npm start`'s default, needs none of it.
    const { S3BlobStore } = await import('./s3-store.ts')
    return S3BlobStore.open({
      bucket: config.s3Bucket,
      prefix: config.s3Prefix ?? '',
      region: config.s3Region ?? '',
      ...(config.s3Endpoint !== undefined ? { endpoint: config.s3Endpoint } : {}),
      ...options,
    })
  }
  if (config.blobDir === undefined) throw new ConfigError('no blob store configured: neither a folder nor an S3 bucket')
  return FsBlobStore.open(config.blobDir)
}
