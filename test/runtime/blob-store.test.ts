// The blob store's contract, run against both backends: the filesystem store in a temp folder
// and the S3 store against a real S3-API server (s3rver) on a free port.
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import {
  MAX_BLOB_SEGMENT_CHARS,
  docBlobPath,
  docIdFromBlobPath,
  docSnapshotsPrefix,
  parseSnapshotKey,
  parseSnapshotMetadata,
  snapshotKey,
  snapshotMetadata,
  SUPERSEDED_SNAPSHOT_TAG,
} from '../../contracts/mod.ts'
import { GetObjectTaggingCommand, S3Client } from '@aws-sdk/client-s3'
import { BLOB_STORE_VARS, BlobStoreConfig, loadConfig } from '../../runtime/config.ts'
import { blobDirOf, openBlobStore, type BlobStore } from '../../runtime/blobs/blob-store.ts'
import { S3BlobStore } from '../../runtime/blobs/s3-store.ts'

const BUCKET = 'docflow-test'
/** Small enough that the listing test spans several ListObjectsV2 pages. */
const LIST_PAGE_SIZE = 3
/** Keys per S3 DeleteObjects request in these tests, so a few keys take several requests. */
const DELETE_BATCH_SIZE = 3

const scratch = mkdtempSync(join(tmpdir(), 'docflow-blobs-'))
t.teardown(() => rmSync(scratch, { recursive: true, force: true }))

// s3rver checks signatures against these; the store reads them through the SDK's default chain.
process.env.AWS_ACCESS_KEY_ID = 'S3RVER'
process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER'

/**
 * s3rver in its own process on a free port. It signs list continuation tokens with DES, which
 * Node 17+'s OpenSSL 3 only has through its legacy provider: hence a child process with the flag
 * rather than the test process.
 */
async function startS3rver(dir: string): Promise<{ endpoint: string; stop: () => Promise<void>; freeze: () => void; thaw: () => void }> {
  mkdirSync(dir, { recursive: true })
  const bin = createRequire(import.meta.url).resolve('s3rver/bin/s3rver.js')
  const child = spawn(process.execPath, ['--openssl-legacy-provider', bin, '-d', dir, '-a', '127.0.0.1', '-p', '0', '-s', '--configure-bucket', BUCKET], { stdio: ['ignore', 'pipe', 'inherit'] })
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    await exited
  }
  const port = await new Promise<number>((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString()
      const listening = /S3rver listening on [\d.]+:(\d+)/.exec(out)
      if (listening) resolve(Number(listening[1]))
    })
    child.once('exit', (code) => reject(new Error(`s3rver exited (${code}) before listening: ${out}`)))
    setTimeout(() => reject(new Error(`s3rver did not listen within 30 s: ${out}`)), 30_000).unref()
  }).catch(async (err: unknown) => {
    await stop()
    throw err
  })
  // A stopped process still has its connections accepted by the kernel, and answers none of them.
  const freeze = () => void child.kill('SIGSTOP')
  const thaw = () => void child.kill('SIGCONT')
  return { endpoint: `http://127.0.0.1:${port}`, stop, freeze, thaw }
}

const s3rver = await startS3rver(join(scratch, 's3rver'))
t.teardown(() => s3rver.stop())
const s3Endpoint = s3rver.endpoint

let nextStore = 0
interface Backend {
  name: string
  open(): Promise<BlobStore>
  /** The folder of a filesystem store, for looking behind it. */
  folder?: string
}

function fsBackend(): Backend {
  const folder = join(scratch, `fs-${++nextStore}`, 'blobs')
  return { name: 'fs', folder, open: () => openBlobStore(loadConfig(BlobStoreConfig, BLOB_STORE_VARS, { DOCFLOW_BLOB_DIR: folder })) }
}

function s3Backend(): Backend {
  const env = { DOCFLOW_S3_BUCKET: BUCKET, DOCFLOW_S3_PREFIX: `run-${++nextStore}`, DOCFLOW_S3_REGION: 'us-east-1', DOCFLOW_S3_ENDPOINT: s3Endpoint }
  return { name: 's3', open: () => openBlobStore(loadConfig(BlobStoreConfig, BLOB_STORE_VARS, env), { listPageSize: LIST_PAGE_SIZE, deleteBatchSize: DELETE_BATCH_SIZE }) }
}

async function listed(store: BlobStore, prefix: string): Promise<string[]> {
  const keys: string[] = []
  for await (const key of store.list(prefix)) keys.push(key)
  return keys
}

/** Every byte value, then pseudo-random bytes: what a snapshot or a .zst looks like to the store. */
function binary(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size)
  let x = seed
  for (let i = 0; i < size; i++) {
    x = (Math.imul(x, 1_103_515_245) + 12_345) >>> 0
    bytes[i] = i < 256 ? i : x >>> 24
  }
  return bytes
}

/** Every file and folder under `dir`, relative to it. */
function tree(dir: string): string[] {
  return (readdirSync(dir, { recursive: true }) as string[]).map((p) => String(p)).sort()
}

for (const makeBackend of [fsBackend, s3Backend]) {
  const probe = makeBackend()
  t.test(`blob store - ${probe.name}`, async (t) => {
    t.test(`blob store - ${probe.name}: binary bytes round-trip, a put replaces, a missing key is null`, async (t) => {
      const store = await makeBackend().open()
      t.teardown(() => store.close())
      const first = binary(300_000, 1)
      await store.put('snapshots/acme/doc/0000000000000001.ydoc', first)
      t.same(await store.get('snapshots/acme/doc/0000000000000001.ydoc'), first)
      const second = binary(1_000, 2)
      await store.put('snapshots/acme/doc/0000000000000001.ydoc', second)
      t.same(await store.get('snapshots/acme/doc/0000000000000001.ydoc'), second, 'a shorter overwrite leaves nothing of the old bytes')
      t.same((await store.head('snapshots/acme/doc/0000000000000001.ydoc'))?.size, 1_000)
      await store.put('empty', new Uint8Array())
      t.same(await store.get('empty'), new Uint8Array())
      t.equal(await store.get('snapshots/acme/doc/0000000000000002.ydoc'), null)
      t.equal(await store.get('snapshots/acme'), null, 'a prefix of keys is no blob')
      t.equal(await store.head('snapshots/acme/nothing'), null)
    })

    t.test(`blob store - ${probe.name}: metadata round-trips, and a put without it clears it`, async (t) => {
      const store = await makeBackend().open()
      t.teardown(() => store.close())
      const time = new Date('2026-11-26T12:34:56.789Z')
      const key = snapshotKey('acme', 'Quarterly plan', 42)
      await store.put(key, binary(10, 3), snapshotMetadata({ seq: 42, time }))
      const info = await store.head(key)
      t.same(info?.size, 10)
      t.same(parseSnapshotMetadata(info!.metadata), { seq: 42, time })
      await store.put(key, binary(11, 4))
      t.same((await store.head(key))?.metadata, {})
      await t.rejects(store.put(key, binary(1, 5), { 'Upper-Case': 'x' }), { name: 'BlobMetadataError' })
      await t.rejects(store.put(key, binary(1, 5), { note: 'naïve' }), { name: 'BlobMetadataError' })
      t.same(await store.get(key), binary(11, 4), 'a refused put leaves the blob alone')
    })

    t.test(`blob store - ${probe.name}: list by prefix is sorted in key byte order and spans pages`, async (t) => {
      const backend = makeBackend()
      const store = await backend.open()
      t.teardown(() => store.close())
      // "-" (0x2d) and "." (0x2e) sort before "/" (0x2f): "a-b" comes before everything in "a/",
      // which a store walking its folders must take care of. Real S3 lists in byte order; s3rver
      // walks its folders and pages from the last key, so it drops such keys: folder store only.
      const walkOrderKeys = backend.folder ? ['a-b', 'a.b', 'a/c-d'] : []
      const keys = ['a/b', 'a/c/d', 'ab', 'a0', 'b/x/y/z', 'B', 'a/c/e', 'snapshots/acme/doc/0000000000000002.ydoc', ...walkOrderKeys]
      for (const key of keys) await store.put(key, new TextEncoder().encode(key))
      const expected = (prefix: string) => keys.filter((k) => k.startsWith(prefix)).sort()
      const everything = await listed(store, '')
      t.ok(everything.length > LIST_PAGE_SIZE * 2, 'more keys than two S3 pages')
      t.same(everything, expected(''), 'all keys, sorted')
      t.same(await listed(store, 'a/'), expected('a/'))
      t.same(await listed(store, 'a/c'), expected('a/c'), 'a string prefix, not a folder')
      t.ok((await listed(store, 'a/c')).includes('a/c/d'))
      t.same(await listed(store, 'a'), expected('a'))
      t.same(await listed(store, 'nothing/'), [])
      t.same(await listed(store, 'a/b/'), [], 'under a blob is nothing')
    })

    t.test(`blob store - ${probe.name}: delete removes the blob and its metadata; deleting nothing is fine`, async (t) => {
      const backend = makeBackend()
      const store = await backend.open()
      t.teardown(() => store.close())
      const key = snapshotKey('acme', 'erase me', 7)
      await store.put(key, binary(5, 6), snapshotMetadata({ seq: 7, time: new Date() }))
      await store.put('keep/this', binary(5, 7))
      await store.delete(key)
      t.equal(await store.get(key), null)
      t.equal(await store.head(key), null)
      t.same(await listed(store, ''), ['keep/this'])
      await store.delete(key)
      await store.put(key, binary(5, 8))
      t.same((await store.head(key))?.metadata, {}, 'a new blob under a deleted key has none of the old metadata')
      await store.delete(key)
      if (backend.folder) t.same(tree(backend.folder), ['keep', 'keep/this'], 'no folder named after the erased document stays')
    })

    t.test(`blob store - ${probe.name}: deleteMany removes every key given, over several requests; a missing key is no failure; a bad key is one, the others go`, async (t) => {
      const backend = makeBackend()
      const store = await backend.open()
      t.teardown(() => store.close())
      const keys = Array.from({ length: 8 }, (_, i) => snapshotKey('acme', `many ${i}`, i + 1))
      for (const key of keys) await store.put(key, binary(5, key.length))
      await store.put('keep/that', binary(5, 7))
      const refused = await store.deleteMany([keys[0]!, 'snapshots/../escape'])
      t.same(refused.map((f) => f.key), ['snapshots/../escape'], 'a key outside the layout is a failure, and touches nothing')
      t.equal((await listed(store, 'snapshots/')).length, keys.length - 1, 'the other key went')
      t.same(await store.deleteMany([...keys, snapshotKey('acme', 'never there', 1)]), [], 'no failures')
      t.same(await listed(store, ''), ['keep/that'], `all ${keys.length} went (${Math.ceil(keys.length / DELETE_BATCH_SIZE)} S3 requests), nothing else`)
      t.same(await store.deleteMany([]), [])
      if (backend.folder) t.same(tree(backend.folder), ['keep', 'keep/that'], 'no folder of a deleted document stays')
    })

    t.test(`blob store - ${probe.name}: awkward doc ids round-trip and stay inside the store`, async (t) => {
      const backend = makeBackend()
      const store = await backend.open()
      t.teardown(() => store.close())
      const docIds = ['ünïcødé 文档 🚀', 'a/b/../../../../etc/passwd', '..', '.', '%2F..%2F%00', 'C:\\Windows', 'Case', 'case', '~41', 'x'.repeat(256), '文'.repeat(100)]
      for (const [i, docId] of docIds.entries()) {
        const key = snapshotKey('acme', docId, i + 1)
        t.same(parseSnapshotKey(key), { tenant: 'acme', docId, seq: i + 1 }, `key of ${JSON.stringify(docId).slice(0, 40)} parses back`)
        await store.put(key, new TextEncoder().encode(docId))
        t.same(await listed(store, docSnapshotsPrefix('acme', docId)), [key], 'listed under its own document only')
      }
      for (const [i, docId] of docIds.entries()) t.same(new TextDecoder().decode((await store.get(snapshotKey('acme', docId, i + 1)))!), docId)
      t.equal(new Set(docIds.map((d) => snapshotKey('acme', d, 1).toLowerCase())).size, docIds.length, 'no two ids meet on a case-insensitive filesystem')
      if (backend.folder) {
        const outside = readdirSync(join(backend.folder, '..'))
        t.same(outside, ['blobs'], 'nothing written beside the store folder')
        for (const path of tree(backend.folder)) {
          t.notOk(relative(backend.folder, join(backend.folder, path)).startsWith('..'), `${path} inside the store`)
          t.ok(path.split('/').every((s) => s.length <= MAX_BLOB_SEGMENT_CHARS + 20), 'every name fits NAME_MAX')
        }
      }
    })

    t.test(`blob store - ${probe.name}: keys outside the layout are refused before any I/O`, async (t) => {
      const store = await makeBackend().open()
      t.teardown(() => store.close())
      for (const key of ['', '../x', 'a/../../x', '/a', 'a/', 'a//b', '.hidden', 'a/./b', 'a/..', 'a\\b', 'ü', 'a b', 'x'.repeat(MAX_BLOB_SEGMENT_CHARS + 1)]) {
        await t.rejects(store.put(key, binary(1, 9)), { name: 'BlobKeyError' }, `put ${JSON.stringify(key)}`)
        await t.rejects(store.get(key), { name: 'BlobKeyError' }, `get ${JSON.stringify(key)}`)
        await t.rejects(store.delete(key), { name: 'BlobKeyError' }, `delete ${JSON.stringify(key)}`)
      }
      await t.rejects(listed(store, '../'), { name: 'BlobKeyError' })
      await t.rejects(listed(store, '/'), { name: 'BlobKeyError' })
    })

  })
}

// S3 makes a PutObject visible whole (its documented guarantee); s3rver, a test double, writes
// objects in place and aborts a concurrent read, so only the folder's atomicity is ours to test.
t.test('blob store - s3: supersede tags the object as the lifecycle rule filters by and keeps its bytes; a missing object is no error', async (t) => {
  const store = await s3Backend().open()
  t.teardown(() => store.close())
  const client = new S3Client({ region: 'us-east-1', endpoint: s3Endpoint, forcePathStyle: true })
  t.teardown(() => client.destroy())
  const objectKey = (key: string) => store.location.slice(`s3://${BUCKET}/`.length) + key
  const key = snapshotKey('acme', 'replaced', 3)
  await store.put(key, binary(64, 9))
  t.same((await client.send(new GetObjectTaggingCommand({ Bucket: BUCKET, Key: objectKey(key) }))).TagSet ?? [], [], 'untagged when written')
  await store.supersede(key)
  t.same((await client.send(new GetObjectTaggingCommand({ Bucket: BUCKET, Key: objectKey(key) }))).TagSet, [{ Key: SUPERSEDED_SNAPSHOT_TAG.key, Value: SUPERSEDED_SNAPSHOT_TAG.value }])
  t.same(await store.get(key), binary(64, 9), 'the bytes stay')
  await t.resolves(store.supersede(snapshotKey('acme', 'never-written', 1)), 'a blob already gone (retention, erasure) is no error')
})

t.test('blob store - s3: a get or a put fails within a bounded time when S3 stops answering', async (t) => {
  const idleTimeoutMs = 1_000
  const store = await S3BlobStore.open({ bucket: BUCKET, prefix: `run-${++nextStore}/`, region: 'us-east-1', endpoint: s3Endpoint, idleTimeoutMs })
  t.teardown(() => store.close())
  const key = snapshotKey('acme', 'stuck', 1)
  await store.put(key, binary(64, 12))
  // The other tests share this s3rver: it answers again once this test ends, however it ends.
  s3rver.freeze()
  t.teardown(s3rver.thaw)
  // 3 attempts of idleTimeoutMs each (the SDK retries a timeout), plus its backoff between them.
  const boundMs = 10 * idleTimeoutMs
  const outcome = (call: Promise<unknown>) =>
    Promise.race([call.then(() => 'resolved', (err: unknown) => err), new Promise((resolve) => setTimeout(() => resolve(`still pending after ${boundMs} ms`), boundMs).unref())])
  const [get, put] = await Promise.all([outcome(store.get(key)), outcome(store.put(snapshotKey('acme', 'stuck', 2), binary(64, 13)))])
  s3rver.thaw()
  t.match(get, { name: 'BlobStoreError', message: /^get .*TimeoutError/ }, 'get fails with a timeout')
  t.match(put, { name: 'BlobStoreError', message: /^put .*TimeoutError/ }, 'put fails with a timeout')
  t.same(await store.get(key), binary(64, 12), 'and works again once S3 answers')
})

t.test('blob store - fs: a reader never sees part of a put, and a crashed put leaves the old blob', async (t) => {
  const backend = fsBackend()
  const store = await backend.open()
  t.teardown(() => store.close())
  const key = 'atomic/blob'
  const versions = [binary(2_000_000, 10), binary(1_500_000, 11)]
  await store.put(key, versions[0]!)
  let writing = true
  let reads = 0
  const reader = (async () => {
    while (writing) {
      const bytes = await store.get(key)
      reads++
      if (!versions.some((v) => Buffer.from(v).equals(Buffer.from(bytes ?? [])))) throw new Error(`read ${bytes?.length ?? 'null'} bytes: part of a put`)
    }
  })()
  for (let i = 0; i < 8; i++) await store.put(key, versions[i % 2]!)
  writing = false
  await reader
  t.ok(reads > 0, `${reads} reads, each a whole version`)
  t.same(await listed(store, ''), [key], 'no temp file is listed')
  // A put killed mid-write leaves its temp file: the old bytes stay the blob, the temp file no key.
  writeFileSync(join(backend.folder!, 'atomic', '.blob.0123456789ab.tmp'), versions[0]!.subarray(0, 1_000))
  t.same(await store.get(key), versions[1], 'the last complete put')
  t.same(await listed(store, 'atomic/'), [key])
  // An erasure removes such leftovers (they hold content no key names): in the folder, and below it when asked.
  mkdirSync(join(backend.folder!, 'atomic', 'deeper'))
  writeFileSync(join(backend.folder!, 'atomic', 'deeper', '.other.ba9876543210.tmp'), versions[0]!.subarray(0, 10))
  t.equal(await store.deleteLeftovers('atomic/', false), 1, 'the temp file of the folder')
  t.equal(await store.deleteLeftovers('atomic/', true), 1, 'then the one below')
  t.same(readdirSync(join(backend.folder!, 'atomic')).sort(), ['blob'], 'the blob stays; the empty subfolder too goes')
  await t.rejects(store.deleteLeftovers('atomic', true), /folder prefix/, 'a prefix that is no folder is refused')
})

t.test('blob store - s3: an unfinished put leaves nothing to delete', async (t) => {
  const store = await s3Backend().open()
  t.teardown(() => store.close())
  t.equal(await store.deleteLeftovers('atomic/', true), 0)
})

t.test('blob store - snapshot keys and their parser', async (t) => {
  const key = snapshotKey('acme', 'Spec/2024 Q3', 123)
  t.equal(key, 'snapshots/acme/~53pec~2F2024~20~513/0000000000000123.ydoc', 'readable, with the sequence padded so keys sort by it')
  t.equal(docIdFromBlobPath(docBlobPath('x'.repeat(256))), 'x'.repeat(256))
  t.equal(docBlobPath('文'.repeat(100)).split('/').length, 5, 'a long id is cut into folders of at most 200 characters')
  for (const bad of [
    'snapshots/acme/doc/123.ydoc', // sequence not padded
    'snapshots/acme/doc/0000000000000000.ydoc', // sequence 0
    'snapshots/acme/Doc/0000000000000001.ydoc', // an uppercase letter is escaped, never plain
    'snapshots/acme/~2f/0000000000000001.ydoc', // lowercase escape
    'snapshots/acme/~61/0000000000000001.ydoc', // escaped plain character
    'snapshots/acme/~FF/0000000000000001.ydoc', // not UTF-8
    'snapshots/acme/d~/0000000000000001.ydoc', // cut escape
    'snapshots/acme/do/c/0000000000000001.ydoc', // cut where the encoder would not cut
    'snapshots/Acme/doc/0000000000000001.ydoc', // bad tenant
    'snapshots/acme/0000000000000001.ydoc', // no document
    'snapshot/acme/doc/0000000000000001.ydoc',
    'snapshots/acme/doc/0000000000000001.ydoc.tmp',
  ]) {
    t.throws(() => parseSnapshotKey(bad), bad)
  }
  t.throws(() => snapshotKey('acme', 'doc', 0))
  t.throws(() => snapshotKey('acme', '🚀'.repeat(256), 1), /longer than/, 'an id no S3 key can hold is refused, not truncated')
  t.throws(() => parseSnapshotMetadata({ 'stream-seq': '12x', 'stream-time': new Date().toISOString() }))
  t.throws(() => parseSnapshotMetadata({ 'stream-seq': '12' }))
})

t.test('blob store - configuration picks the backend and refuses half-given S3 settings', async (t) => {
  const load = (env: Record<string, string>) => loadConfig(BlobStoreConfig, BLOB_STORE_VARS, env)
  t.throws(() => load({}), /DOCFLOW_BLOB_DIR.*no blob store/)
  t.throws(() => load({ DOCFLOW_BLOB_DIR: '/x', DOCFLOW_S3_PREFIX: 'p' }), /DOCFLOW_S3_PREFIX.*without DOCFLOW_S3_BUCKET/)
  t.throws(() => load({ DOCFLOW_BLOB_DIR: '/x', DOCFLOW_S3_ENDPOINT: s3Endpoint }), /DOCFLOW_S3_ENDPOINT.*without DOCFLOW_S3_BUCKET/)
  t.throws(() => load({ DOCFLOW_S3_BUCKET: BUCKET }), /DOCFLOW_S3_REGION.*needs its region/)
  t.throws(() => load({ DOCFLOW_S3_BUCKET: 'Bad_Bucket', DOCFLOW_S3_REGION: 'us-east-1' }), /DOCFLOW_S3_BUCKET/)
  t.throws(() => load({ DOCFLOW_S3_BUCKET: BUCKET, DOCFLOW_S3_REGION: 'us-east-1', DOCFLOW_S3_PREFIX: '../up' }), /DOCFLOW_S3_PREFIX/)
  t.equal(load({ DOCFLOW_S3_BUCKET: BUCKET, DOCFLOW_S3_REGION: 'us-east-1', DOCFLOW_S3_PREFIX: 'docflow' }).s3Prefix, 'docflow/')

  const s3 = await openBlobStore(load({ DOCFLOW_BLOB_DIR: join(scratch, 'unused'), DOCFLOW_S3_BUCKET: BUCKET, DOCFLOW_S3_REGION: 'us-east-1', DOCFLOW_S3_ENDPOINT: s3Endpoint, DOCFLOW_S3_PREFIX: 'picked' }))
  t.equal(s3.location, `s3://${BUCKET}/picked/`, 'a bucket wins over the folder')
  await s3.close()
  const fs = await openBlobStore(load({ DOCFLOW_BLOB_DIR: blobDirOf(join(scratch, 'data')) }))
  t.equal(fs.location, join(scratch, 'data', 'blobs'))
  await fs.close()
  await t.rejects(
    openBlobStore(load({ DOCFLOW_S3_BUCKET: 'no-such-bucket', DOCFLOW_S3_REGION: 'us-east-1', DOCFLOW_S3_ENDPOINT: s3Endpoint })),
    { name: 'BlobStoreError', message: /no-such-bucket/ },
    'a bucket that is not there fails at open',
  )
})
