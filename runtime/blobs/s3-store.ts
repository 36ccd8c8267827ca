// The S3 blob store: key `a/b/c` is the object `<prefix>a/b/c` in the bucket.
//
// Invariant: S3 makes a PutObject visible whole or not at all, and lists keys in UTF-8 byte
// order, so this backend keeps the store's contract (blob-store.ts) by doing no more than one
// request per operation. Metadata is the object's user metadata (x-amz-meta-*), written with
// the same PutObject, so bytes and metadata change together.
import {
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  PutObjectTaggingCommand,
  S3Client,
} from '@aws-sdk/client-s3'
import { SUPERSEDED_SNAPSHOT_TAG, isBlobKey, type BlobMetadata } from '../../contracts/mod.ts'
import type { BlobDeleteFailure, BlobInfo, BlobStore, BlobStoreOptions } from './blob-store.ts'
import { checkBlobKey, checkBlobKeyPrefix, checkBlobMetadata } from './checks.ts'
import { BlobStoreError } from './errors.ts'

/** S3 answers at most 1000 keys per ListObjectsV2 page, and takes at most 1000 per DeleteObjects. */
const MAX_KEYS_PER_REQUEST = 1000

/**
 * A request fails when its socket carries no byte either way for this long. An idle timeout, not
 * a whole-request deadline: a snapshot can be MBs, and a deadline long enough for a large put on
 * a slow link would leave a stuck small get hanging as long, while an idle timeout fails a stuck
 * call whatever its size and never one that still moves bytes. S3 answers a request (a put: once
 * its last byte is sent) in well under a second, so 10 s is a generous pause. The SDK arms this
 * timer 3 s into an attempt and retries a timeout (3 attempts in all): a call to an S3 that
 * stopped answering fails after about 3 x (3 s + this), ~40 s.
 */
const S3_IDLE_TIMEOUT_MS = 10_000

/** A TCP connect to S3 takes milliseconds; 5 s still outlasts a lost SYN's two resends (1 s, 3 s). */
const S3_CONNECT_TIMEOUT_MS = 5_000

export interface S3BlobStoreSettings extends BlobStoreOptions {
  bucket: string
  /** "" or ending in "/" (runtime/config.ts BlobStoreConfig normalizes it). */
  prefix: string
  region: string
  /** An S3-API server other than AWS (MinIO, s3rver), addressed path-style. Default: AWS. */
  endpoint?: string
  /** A request fails after its socket is idle this long. Default S3_IDLE_TIMEOUT_MS. */
  idleTimeoutMs?: number
}

function keysPerRequest(name: string, value = MAX_KEYS_PER_REQUEST): number {
  if (!Number.isInteger(value) || value < 1 || value > MAX_KEYS_PER_REQUEST) throw new RangeError(`${name} must be 1..${MAX_KEYS_PER_REQUEST}, got ${value}`)
  return value
}

/** The object was not there: GetObject says NoSuchKey, HeadObject a bare 404. */
const isMissing = (err: unknown): boolean =>
  (err as { name?: string } | null)?.name === 'NoSuchKey' || (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode === 404

export class S3BlobStore implements BlobStore {
  private readonly listPageSize: number
  private readonly deleteBatchSize: number

  private constructor(
    private readonly client: S3Client,
    private readonly settings: S3BlobStoreSettings,
  ) {
    this.listPageSize = keysPerRequest('listPageSize', settings.listPageSize)
    this.deleteBatchSize = keysPerRequest('deleteBatchSize', settings.deleteBatchSize)
  }

  get location(): string {
    return `s3://${this.settings.bucket}/${this.settings.prefix}`
  }

  /** A client for the bucket (credentials from the SDK's default chain), checked with HeadBucket so bad settings fail at start. */
  static async open(settings: S3BlobStoreSettings): Promise<S3BlobStore> {
    const idleTimeoutMs = settings.idleTimeoutMs ?? S3_IDLE_TIMEOUT_MS
    if (!Number.isInteger(idleTimeoutMs) || idleTimeoutMs < 1) throw new RangeError(`idleTimeoutMs must be a positive integer, got ${idleTimeoutMs}`)
    const client = new S3Client({
      region: settings.region,
      ...(settings.endpoint !== undefined ? { endpoint: settings.endpoint, forcePathStyle: true } : {}),
      // Options of the SDK's own NodeHttpHandler, whose timeouts are all off by default: a call
      // to an S3 that stops answering would never settle.
      requestHandler: { connectionTimeout: S3_CONNECT_TIMEOUT_MS, socketTimeout: idleTimeoutMs },
    })
    const store = new S3BlobStore(client, settings)
    try {
      await client.send(new HeadBucketCommand({ Bucket: settings.bucket }))
    } catch (err) {
      client.destroy()
      throw new BlobStoreError(`cannot reach bucket ${store.location} (region ${settings.region}${settings.endpoint ? `, endpoint ${settings.endpoint}` : ''}): ${describe(err)}`, { cause: err })
    }
    return store
  }

  async put(key: string, bytes: Uint8Array, metadata: BlobMetadata = {}): Promise<void> {
    const objectKey = this.objectKey(key)
    const checked = checkBlobMetadata(metadata)
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.settings.bucket, Key: objectKey, Body: bytes, ContentType: 'application/octet-stream', Metadata: checked }))
    } catch (err) {
      throw new BlobStoreError(`put ${this.location}${key}: ${describe(err)}`, { cause: err })
    }
  }

  async get(key: string): Promise<Uint8Array | null> {
    const objectKey = this.objectKey(key)
    try {
      const answer = await this.client.send(new GetObjectCommand({ Bucket: this.settings.bucket, Key: objectKey }))
      if (!answer.Body) throw new Error('answer without a body')
      return await answer.Body.transformToByteArray()
    } catch (err) {
      if (isMissing(err)) return null
      throw new BlobStoreError(`get ${this.location}${key}: ${describe(err)}`, { cause: err })
    }
  }

  async head(key: string): Promise<BlobInfo | null> {
    const objectKey = this.objectKey(key)
    try {
      const answer = await this.client.send(new HeadObjectCommand({ Bucket: this.settings.bucket, Key: objectKey }))
      return { size: answer.ContentLength ?? 0, metadata: answer.Metadata ?? {} }
    } catch (err) {
      if (isMissing(err)) return null
      throw new BlobStoreError(`head ${this.location}${key}: ${describe(err)}`, { cause: err })
    }
  }

  async *list(prefix: string): AsyncIterable<string> {
    checkBlobKeyPrefix(prefix)
    let continuationToken: string | undefined
    do {
      let page
      try {
        page = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.settings.bucket, Prefix: this.settings.prefix + prefix, MaxKeys: this.listPageSize, ContinuationToken: continuationToken }),
        )
      } catch (err) {
        throw new BlobStoreError(`list ${this.location}${prefix}: ${describe(err)}`, { cause: err })
      }
      for (const object of page.Contents ?? []) {
        const key = object.Key?.slice(this.settings.prefix.length)
        // Objects someone else put under the prefix, outside the layout, are not keys.
        if (key !== undefined && isBlobKey(key)) yield key
      }
      continuationToken = page.IsTruncated ? page.NextContinuationToken : undefined
    } while (continuationToken !== undefined)
  }

  async delete(key: string): Promise<void> {
    const objectKey = this.objectKey(key)
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.settings.bucket, Key: objectKey }))
    } catch (err) {
      throw new BlobStoreError(`delete ${this.location}${key}: ${describe(err)}`, { cause: err })
    }
  }

  async deleteMany(keys: readonly string[]): Promise<BlobDeleteFailure[]> {
    const failures: BlobDeleteFailure[] = []
    const objectKeys: string[] = []
    for (const key of keys) {
      try {
        objectKeys.push(this.objectKey(key))
      } catch (err) {
        failures.push({ key, reason: (err as Error).message }) // outside the layout: not ours to touch
      }
    }
    for (let i = 0; i < objectKeys.length; i += this.deleteBatchSize) {
      const objects = objectKeys.slice(i, i + this.deleteBatchSize).map((Key) => ({ Key }))
      let answer
      try {
        answer = await this.client.send(new DeleteObjectsCommand({ Bucket: this.settings.bucket, Delete: { Objects: objects, Quiet: true } }))
      } catch (err) {
        throw new BlobStoreError(`delete ${objects.length} keys from ${this.location}: ${describe(err)}`, { cause: err })
      }
      for (const e of answer.Errors ?? []) failures.push({ key: (e.Key ?? '').slice(this.settings.prefix.length), reason: `${e.Code ?? 'error'}: ${e.Message ?? ''}` })
    }
    return failures
  }

  async supersede(key: string): Promise<void> {
    const objectKey = this.objectKey(key)
    try {
      const tag = { Key: SUPERSEDED_SNAPSHOT_TAG.key, Value: SUPERSEDED_SNAPSHOT_TAG.value }
      await this.client.send(new PutObjectTaggingCommand({ Bucket: this.settings.bucket, Key: objectKey, Tagging: { TagSet: [tag] } }))
    } catch (err) {
      if (isMissing(err)) return
      throw new BlobStoreError(`tag ${this.location}${key}: ${describe(err)}`, { cause: err })
    }
  }

  /** A put is one PutObject, all or nothing: an unfinished one leaves no object. */
  async deleteLeftovers(): Promise<number> {
    return 0
  }

  async close(): Promise<void> {
    this.client.destroy()
  }

  private objectKey(key: string): string {
    checkBlobKey(key)
    return this.settings.prefix + key
  }
}

function describe(err: unknown): string {
  const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } }
  const status = e.$metadata?.httpStatusCode
  return `${e.name ?? 'Error'}${status !== undefined ? ` (HTTP ${status})` : ''}: ${e.message ?? String(err)}`
}
