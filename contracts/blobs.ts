import { z } from 'zod'
import { DocId, TenantId } from './ids.ts'

// Keys of the blob store (runtime/blobs): the same key names a file under the filesystem
// store's folder and an object under the S3 bucket's prefix, so a key may hold only what is
// safe in both — path segments of [A-Za-z0-9._=~-], none empty, none starting with "." (so never
// "." or "..", and the filesystem store's own temp and metadata files, which start with ".",
// are never keys).

/** S3 allows 1024 bytes per object key; DOCFLOW_S3_PREFIX may take MAX_BLOB_PREFIX_BYTES of them. */
export const MAX_BLOB_KEY_BYTES = 960
/** Longest DOCFLOW_S3_PREFIX (with its trailing "/"). */
export const MAX_BLOB_PREFIX_BYTES = 64
/** Longest key segment: a file name is at most 255 bytes, and the filesystem store adds a temp suffix. */
export const MAX_BLOB_SEGMENT_CHARS = 200

const SEGMENT = /^[A-Za-z0-9_=~-][A-Za-z0-9._=~-]*$/

function isSegment(segment: string): boolean {
  return segment.length <= MAX_BLOB_SEGMENT_CHARS && SEGMENT.test(segment)
}

/** A key both blob store backends accept: "/"-separated segments as above, at most MAX_BLOB_KEY_BYTES. */
export function isBlobKey(key: string): boolean {
  return key.length > 0 && key.length <= MAX_BLOB_KEY_BYTES && key.split('/').every(isSegment)
}

/** A prefix to list by: "" (everything), a key, or a key and "/" (everything under it). Matched as a string prefix, as S3 does. */
export function isBlobKeyPrefix(prefix: string): boolean {
  return prefix === '' || isBlobKey(prefix.endsWith('/') ? prefix.slice(0, -1) : prefix)
}

/**
 * User metadata of a blob (S3 object metadata; the filesystem store's sidecar): lowercase keys,
 * printable ASCII values without surrounding spaces (what S3 keeps as given), at most 2 KiB in all.
 */
export const BlobMetadata = z
  .record(
    z.string().regex(/^[a-z0-9][a-z0-9-]{0,63}$/, 'metadata key: lowercase a-z, 0-9 and "-", at most 64'),
    z.string().regex(/^([!-~]([ -~]*[!-~])?)?$/, 'metadata value: printable ASCII, no surrounding spaces'),
  )
  .refine((m) => Object.entries(m).reduce((n, [k, v]) => n + k.length + v.length, 0) <= 2048, 'metadata: more than 2 KiB (S3 limit)')
export type BlobMetadata = z.infer<typeof BlobMetadata>

// ---- doc ids in keys ------------------------------------------------------------------------

const PLAIN = /^[a-z0-9_-]$/
const ESCAPE = /^~[0-9A-F]{2}$/

/**
 * A doc id as key segments: a-z, 0-9, "_" and "-" kept, every other UTF-8 byte as ~HH (so "/",
 * ".", "%" and uppercase letters too: two ids differing only in case stay apart on a
 * case-insensitive filesystem, which contracts/ids.ts docKey would not), cut into segments of at
 * most MAX_BLOB_SEGMENT_CHARS at escape boundaries. Reversible: docIdFromBlobPath.
 */
export function docBlobPath(docId: string): string {
  DocId.parse(docId)
  const segments: string[] = []
  let segment = ''
  for (const ch of docId) {
    const token = PLAIN.test(ch) ? ch : [...Buffer.from(ch, 'utf8')].map((b) => '~' + b.toString(16).toUpperCase().padStart(2, '0')).join('')
    if (segment.length + token.length > MAX_BLOB_SEGMENT_CHARS) {
      segments.push(segment)
      segment = ''
    }
    segment += token
  }
  segments.push(segment)
  return segments.join('/')
}

/** Inverse of docBlobPath; throws on a path it cannot have produced. */
export function docIdFromBlobPath(path: string): string {
  const bytes: number[] = []
  const joined = path.split('/').join('')
  for (let i = 0; i < joined.length; ) {
    const escape = joined.slice(i, i + 3)
    if (ESCAPE.test(escape)) {
      bytes.push(parseInt(escape.slice(1), 16))
      i += 3
    } else if (PLAIN.test(joined[i]!)) {
      bytes.push(joined.charCodeAt(i))
      i += 1
    } else {
      throw new Error(`bad doc path at ${i}: ${path}`)
    }
  }
  let docId: string
  try {
    docId = new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(bytes))
  } catch (err) {
    throw new Error(`doc path is not UTF-8: ${path}`, { cause: err })
  }
  if (!DocId.safeParse(docId).success || docBlobPath(docId) !== path) throw new Error(`non-canonical doc path: ${path}`)
  return docId
}

// ---- snapshots -------------------------------------------------------------------------------

export const SNAPSHOTS_FOLDER = 'snapshots'
/**
 * The S3 object tag a snapshot gets once a newer one of its document is written. The bucket's
 * lifecycle rule (helm/) expires only tagged snapshots, so, like core's retention, it never
 * takes a document's newest: a document idle past the retention keeps its last snapshot.
 */
export const SUPERSEDED_SNAPSHOT_TAG = { key: 'docflow-superseded', value: 'true' } as const
export const SNAPSHOT_SUFFIX = '.ydoc'
/**
 * Digits of a snapshot's sequence in its key, zero-padded so key order is sequence order (a
 * listing of a document's snapshots is oldest first; 16 digits hold every safe integer).
 */
export const SNAPSHOT_SEQ_DIGITS = 16

/** Stream sequence of the last update a snapshot holds: a positive safe integer. */
const SnapshotSeq = z.number().int().positive().max(Number.MAX_SAFE_INTEGER)

/** Every snapshot of a tenant: `snapshots/<tenant>/`. */
export function tenantSnapshotsPrefix(tenant: string): string {
  return `${SNAPSHOTS_FOLDER}/${TenantId.parse(tenant)}/`
}

/**
 * Every snapshot of one document, oldest first when listed: `snapshots/<tenant>/<doc path>/`.
 * A listing can also hold snapshots of longer ids whose path continues this one past a segment
 * boundary (66 × "Q" and 67 × "Q"): check each key with parseSnapshotKey before acting on it.
 */
export function docSnapshotsPrefix(tenant: string, docId: string): string {
  return `${tenantSnapshotsPrefix(tenant)}${docBlobPath(docId)}/`
}

/**
 * `snapshots/<tenant>/<docBlobPath(docId)>/<seq, 16 digits>.ydoc`: the document's state as one
 * Yjs update, holding every update up to stream sequence `seq`.
 */
export function snapshotKey(tenant: string, docId: string, seq: number): string {
  const key = `${docSnapshotsPrefix(tenant, docId)}${String(SnapshotSeq.parse(seq)).padStart(SNAPSHOT_SEQ_DIGITS, '0')}${SNAPSHOT_SUFFIX}`
  if (!isBlobKey(key)) throw new Error(`snapshot key longer than ${MAX_BLOB_KEY_BYTES} bytes (doc id ${JSON.stringify(docId)} encodes too long)`)
  return key
}

/**
 * False for a document whose id encodes too long for any snapshot key (a long non-ASCII id: up to
 * 9 bytes a character): it has no snapshot, and nothing to delete under a snapshot folder.
 */
export function hasSnapshotKeys(tenant: string, docId: string): boolean {
  return isBlobKey(`${docSnapshotsPrefix(tenant, docId)}${'0'.repeat(SNAPSHOT_SEQ_DIGITS)}${SNAPSHOT_SUFFIX}`)
}

export interface SnapshotKeyParts {
  tenant: string
  docId: string
  seq: number
}

const SEQ_NAME = new RegExp(`^(\\d{${SNAPSHOT_SEQ_DIGITS}})${SNAPSHOT_SUFFIX.replace('.', '\\.')}$`)

/** Inverse of snapshotKey; throws on any key snapshotKey cannot have produced. */
export function parseSnapshotKey(key: string): SnapshotKeyParts {
  const parts = key.split('/')
  const seqName = SEQ_NAME.exec(parts.at(-1) ?? '')
  if (parts.length < 4 || parts[0] !== SNAPSHOTS_FOLDER || !seqName) throw new Error(`not a snapshot key: ${key}`)
  const tenant = TenantId.safeParse(parts[1])
  if (!tenant.success) throw new Error(`bad tenant in snapshot key: ${key}`)
  const docId = docIdFromBlobPath(parts.slice(2, -1).join('/'))
  const seq = Number(seqName[1])
  if (snapshotKey(tenant.data, docId, seq) !== key) throw new Error(`non-canonical snapshot key: ${key}`)
  return { tenant: tenant.data, docId, seq }
}

/** Metadata names a snapshot is tagged with (S3 object metadata, x-amz-meta-*). */
export const SnapshotMetadataKey = {
  /** Stream sequence of the last update the snapshot holds (the key has it too). */
  StreamSeq: 'stream-seq',
  /** Time of that update in the stream (ISO 8601), so `state?at=<time>` can pick a snapshot by time. */
  StreamTime: 'stream-time',
} as const

export interface SnapshotTags {
  seq: number
  time: Date
}

export function snapshotMetadata(tags: SnapshotTags): BlobMetadata {
  return { [SnapshotMetadataKey.StreamSeq]: String(SnapshotSeq.parse(tags.seq)), [SnapshotMetadataKey.StreamTime]: tags.time.toISOString() }
}

/** Inverse of snapshotMetadata; throws when a tag is missing or malformed. */
export function parseSnapshotMetadata(metadata: BlobMetadata): SnapshotTags {
  const seqText = metadata[SnapshotMetadataKey.StreamSeq] ?? ''
  const timeText = metadata[SnapshotMetadataKey.StreamTime] ?? ''
  const seq = Number(seqText)
  const time = new Date(timeText)
  if (!/^\d+$/.test(seqText) || !SnapshotSeq.safeParse(seq).success) throw new Error(`bad snapshot ${SnapshotMetadataKey.StreamSeq}: ${JSON.stringify(seqText)}`)
  if (Number.isNaN(time.getTime()) || time.toISOString() !== timeText) throw new Error(`bad snapshot ${SnapshotMetadataKey.StreamTime}: ${JSON.stringify(timeText)}`)
  return { seq, time }
}
