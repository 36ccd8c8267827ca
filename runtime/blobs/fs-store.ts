// The filesystem blob store: key `a/b/c` is the file `<root>/a/b/c`.
//
// Invariant: a key's file only ever appears by rename(2) of a complete, fsynced temp file in the
// same folder, so a reader (or a process that restarts after a crash mid-put) sees the old
// bytes or the new ones, never part of them. The store's own files — temp files and metadata
// sidecars — are named with a leading ".", which no key segment has (contracts/blobs.ts), so
// they are never listed, got or overwritten as keys.
//
// Metadata lives in a sidecar `.<name>.meta.json` beside the file, not in the file (the blob
// stays the plain bytes: a snapshot is a Yjs update, an archive file a .zst anyone can read)
// and not in the key (keys are the pinned layout, and the sidecar keeps any metadata, not only
// what a key could spell). The sidecar is renamed into place before the data, so a crash
// between the two leaves the old bytes with the new metadata; a blob rewritten under the same
// key holds the same content in this layout (a snapshot at one sequence), so that is harmless.
import { randomBytes } from 'node:crypto'
import { mkdir, open, readFile, readdir, realpath, rename, rm, rmdir, stat, unlink } from 'node:fs/promises'
import { dirname, join, sep } from 'node:path'
import { isBlobKey, type BlobMetadata } from '../../contracts/mod.ts'
import type { BlobDeleteFailure, BlobInfo, BlobStore } from './blob-store.ts'
import { checkBlobKey, checkBlobKeyPrefix, checkBlobMetadata } from './checks.ts'
import { BlobKeyError, BlobMetadataError, BlobStoreError } from './errors.ts'

const DIR_MODE = 0o700
const FILE_MODE = 0o600
const SIDECAR_SUFFIX = '.meta.json'
/** A put retries when a concurrent delete removed the (then empty) folder it had just made. */
const PUT_ATTEMPTS = 3

const codeOf = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | null)?.code
/** The key names nothing: no such file, or a folder (a key prefix) where a file would be. */
const isAbsent = (err: unknown): boolean => ['ENOENT', 'ENOTDIR', 'EISDIR'].includes(codeOf(err) ?? '')

export class FsBlobStore implements BlobStore {
  private constructor(private readonly root: string) {}

  get location(): string {
    return this.root
  }

  /** Opens (creating) the folder `dir`. */
  static async open(dir: string): Promise<FsBlobStore> {
    try {
      await mkdir(dir, { recursive: true, mode: DIR_MODE })
      return new FsBlobStore(await realpath(dir))
    } catch (err) {
      throw new BlobStoreError(`cannot open blob folder ${dir}: ${(err as Error).message}`, { cause: err })
    }
  }

  async put(key: string, bytes: Uint8Array, metadata: BlobMetadata = {}): Promise<void> {
    const path = this.pathOf(key)
    const checked = checkBlobMetadata(metadata)
    const sidecar = sidecarOf(path)
    for (let attempt = 1; ; attempt++) {
      try {
        await mkdir(dirname(path), { recursive: true, mode: DIR_MODE })
        if (Object.keys(checked).length > 0) await writeAtomically(sidecar, Buffer.from(JSON.stringify(checked)))
        else await rm(sidecar, { force: true })
        await writeAtomically(path, bytes)
        return
      } catch (err) {
        if (codeOf(err) === 'ENOENT' && attempt < PUT_ATTEMPTS) continue
        throw new BlobStoreError(`put ${key} in ${this.root}: ${(err as Error).message}`, { cause: err })
      }
    }
  }

  async get(key: string): Promise<Uint8Array | null> {
    const path = this.pathOf(key)
    try {
      const bytes = await readFile(path)
      return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    } catch (err) {
      if (isAbsent(err)) return null
      throw new BlobStoreError(`get ${key} from ${this.root}: ${(err as Error).message}`, { cause: err })
    }
  }

  async head(key: string): Promise<BlobInfo | null> {
    const path = this.pathOf(key)
    let size: number
    let sidecarText: string | null
    try {
      const stats = await stat(path)
      if (!stats.isFile()) return null
      size = stats.size
      sidecarText = await readFile(sidecarOf(path), 'utf8').catch((err: unknown) => {
        if (codeOf(err) === 'ENOENT') return null
        throw err
      })
    } catch (err) {
      if (isAbsent(err)) return null
      throw new BlobStoreError(`head ${key} in ${this.root}: ${(err as Error).message}`, { cause: err })
    }
    if (sidecarText === null) return { size, metadata: {} }
    try {
      return { size, metadata: checkBlobMetadata(JSON.parse(sidecarText) as BlobMetadata) }
    } catch (err) {
      throw new BlobMetadataError(`metadata sidecar of ${key} in ${this.root} is not metadata`, { cause: err })
    }
  }

  async *list(prefix: string): AsyncIterable<string> {
    checkBlobKeyPrefix(prefix)
    const cut = prefix.lastIndexOf('/') + 1
    yield* this.walk(prefix.slice(0, cut), prefix.slice(cut))
  }

  async supersede(): Promise<void> {}

  async delete(key: string): Promise<void> {
    const path = this.pathOf(key)
    try {
      await unlink(path).catch((err: unknown) => {
        if (!isAbsent(err)) throw err
      })
      await rm(sidecarOf(path), { force: true })
      await this.removeEmptyFolders(dirname(path))
    } catch (err) {
      throw new BlobStoreError(`delete ${key} in ${this.root}: ${(err as Error).message}`, { cause: err })
    }
  }

  async deleteMany(keys: readonly string[]): Promise<BlobDeleteFailure[]> {
    const failures: BlobDeleteFailure[] = []
    for (const key of keys) {
      await this.delete(key).catch((err: unknown) => failures.push({ key, reason: (err as Error).message }))
    }
    return failures
  }

  /** The temp files of puts a crash cut short (writeAtomically: `.<name>.<random>.tmp`). */
  async deleteLeftovers(prefix: string, recursive: boolean): Promise<number> {
    checkBlobKeyPrefix(prefix)
    if (!prefix.endsWith('/')) throw new BlobKeyError(`deleteLeftovers takes a folder prefix ending in "/", not ${JSON.stringify(prefix)}`)
    const sweep = async (folder: string): Promise<number> => {
      let entries
      try {
        entries = await readdir(folder, { withFileTypes: true })
      } catch (err) {
        if (isAbsent(err)) return 0
        throw new BlobStoreError(`sweep ${folder}: ${(err as Error).message}`, { cause: err })
      }
      let removed = 0
      for (const e of entries) {
        if (e.isFile() && TEMP_FILE.test(e.name)) {
          await rm(join(folder, e.name), { force: true })
          removed++
        } else if (recursive && e.isDirectory()) removed += await sweep(join(folder, e.name))
      }
      // A folder is named after its document: none stays behind empty.
      if (removed > 0) await this.removeEmptyFolders(folder)
      return removed
    }
    return await sweep(join(this.root, ...prefix.split('/').filter(Boolean)))
  }

  async close(): Promise<void> {}

  /** The file of `key`, checked to lie inside the root (keys have no "." or ".." segments; this is the second guard). */
  private pathOf(key: string): string {
    checkBlobKey(key)
    const path = join(this.root, ...key.split('/'))
    if (!path.startsWith(this.root + sep)) throw new BlobKeyError(`blob key ${JSON.stringify(key)} leaves ${this.root}`)
    return path
  }

  /**
   * Keys under the folder of `keyFolder` ("" or ending in "/") whose next segment starts with
   * `namePrefix`, depth first in key byte order: a folder `a` sorts as `a/`, so `a-b` (0x2d) comes
   * before everything in `a/` (0x2f), as S3 orders the same keys.
   */
  private async *walk(keyFolder: string, namePrefix: string): AsyncIterable<string> {
    const folder = join(this.root, ...keyFolder.split('/').filter(Boolean))
    let entries
    try {
      entries = await readdir(folder, { withFileTypes: true })
    } catch (err) {
      if (isAbsent(err)) return
      throw new BlobStoreError(`list ${keyFolder}${namePrefix} in ${this.root}: ${(err as Error).message}`, { cause: err })
    }
    const children = entries
      // A name that is no key segment (someone else's file) is not a key, as a foreign object in S3 is not.
      .filter((e) => e.name.startsWith(namePrefix) && (e.isFile() || e.isDirectory()) && isBlobKey(e.name))
      .map((e) => ({ name: e.name, folder: e.isDirectory(), order: e.isDirectory() ? `${e.name}/` : e.name }))
      .sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0))
    for (const child of children) {
      if (child.folder) yield* this.walk(`${keyFolder}${child.name}/`, '')
      else yield `${keyFolder}${child.name}`
    }
  }

  /** Removes folders left empty by a delete, up to the root, so an erased document leaves no folder named after it. */
  private async removeEmptyFolders(folder: string): Promise<void> {
    for (let f = folder; f.startsWith(this.root + sep); f = dirname(f)) {
      try {
        await rmdir(f)
      } catch (err) {
        if (['ENOTEMPTY', 'EEXIST', 'ENOENT'].includes(codeOf(err) ?? '')) return
        throw err
      }
    }
  }
}

function sidecarOf(path: string): string {
  return join(dirname(path), `.${path.slice(dirname(path).length + 1)}${SIDECAR_SUFFIX}`)
}

/** A temp file of writeAtomically. */
const TEMP_FILE = /^\..+\.[0-9a-f]{12}\.tmp$/

/** Writes `bytes` to `path` through a temp file beside it: write, fsync, rename, fsync the folder. */
async function writeAtomically(path: string, bytes: Uint8Array): Promise<void> {
  const folder = dirname(path)
  const temp = join(folder, `.${path.slice(folder.length + 1)}.${randomBytes(6).toString('hex')}.tmp`)
  try {
    const file = await open(temp, 'wx', FILE_MODE)
    try {
      await file.writeFile(bytes)
      await file.sync()
    } finally {
      await file.close()
    }
    await rename(temp, path)
  } catch (err) {
    const cleanup = await rm(temp, { force: true }).then(
      () => null,
      (rmErr: unknown) => rmErr,
    )
    throw cleanup === null ? err : new AggregateError([err, cleanup], `${(err as Error).message} (and the temp file ${temp} stayed)`)
  }
  const dir = await open(folder, 'r')
  try {
    await dir.sync()
  } finally {
    await dir.close()
  }
}
