import t from 'tap'
import * as Y from 'yjs'
import { join } from 'node:path'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { jetstream } from '@nats-io/jetstream'
import { LAST_SEQ_HEADER, STATE_SEQ_HEADER, parseSnapshotKey, parseSnapshotMetadata, snapshotKey } from '../../contracts/mod.ts'
import type { BlobStore } from '../../runtime/blobs/blob-store.ts'
import { BlobStoreError } from '../../runtime/blobs/errors.ts'
import { FsBlobStore } from '../../runtime/blobs/fs-store.ts'
import { readStateAt } from '../../core/point-in-time.ts'
import { Snapshots } from '../../core/snapshots.ts'
import { createCoreMetrics } from '../../core/metrics.ts'
import { createRegistry } from '../../runtime/metrics.ts'
import { createLogger } from '../../runtime/log.ts'
import { counterValue } from '../helpers/metric-value.ts'
import { setup, token } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'
import { publishEdit } from '../helpers/edits.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const blobs = await FsBlobStore.open(mkdtempSync(join(tmpdir(), 'docflow-snapshots-')))
const js = jetstream(await stack.connect())

/** Appends `n` characters, one update each, published in order, waiting for core every 9 (so compactions happen along the way); the text typed is returned. */
async function type(docId: string, n: number, clientID: number): Promise<string> {
  const doc = new Y.Doc()
  doc.clientID = clientID
  const text = doc.getText('t')
  let update: Uint8Array | null = null
  doc.on('update', (u: Uint8Array) => (update = u))
  for (let i = 0; i < n; i++) {
    text.insert(text.length, String.fromCharCode(97 + (i % 26)))
    await publishEdit(js, 'acme', docId, update!)
    if (i % 9 === 8) await until('core caught up', async () => (await seqsOf(docId)).length === i + 1, 20_000)
  }
  return text.toString()
}

const textOf = (update: Uint8Array) => {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, update)
  return doc.getText('t').toString()
}

/** The doc's op-log stream sequences, oldest first. */
const seqsOf = async (docId: string) => (await stack.db.query<{ s: string }>('SELECT stream_seq AS s FROM op_log WHERE tenant = $1 AND doc_id = $2 ORDER BY stream_seq', ['acme', docId])).rows.map((r) => Number(r.s))

t.test('core - compaction writes snapshots to the blob store, tagged with their stream sequence, at most one per document per interval', async (t) => {
  const core = await stack.core({ blobs, compactEveryOps: 10, snapshotIntervalMs: 1 })
  const typed = await type('snap-doc', 45, 501)
  await until('every edit committed', async () => (await seqsOf('snap-doc')).length === 45, 20_000)
  await until('snapshots written', async () => ((await stack.db.query('SELECT 1 FROM snapshots WHERE tenant = $1 AND doc_id = $2', ['acme', 'snap-doc'])).rowCount ?? 0) >= 2, 20_000)
  const seqs = await seqsOf('snap-doc')
  const rows = (await stack.db.query<{ stream_seq: string; blob_key: string }>('SELECT stream_seq, blob_key FROM snapshots WHERE tenant = $1 AND doc_id = $2 ORDER BY stream_seq', ['acme', 'snap-doc'])).rows
  for (const row of rows) {
    const seq = Number(row.stream_seq)
    t.same(parseSnapshotKey(row.blob_key), { tenant: 'acme', docId: 'snap-doc', seq }, 'the key names the tenant, the document and the sequence')
    const bytes = await blobs.get(row.blob_key)
    t.ok(bytes, 'the blob exists')
    t.equal(parseSnapshotMetadata((await blobs.head(row.blob_key))!.metadata).seq, seq, 'tagged with its sequence')
    const held = seqs.filter((s) => s <= seq).length
    t.equal(textOf(bytes!), typed.slice(0, held), `the snapshot at ${seq} holds exactly the ${held} edits up to it`)
  }
  await core.stop()

  // A long interval: many more compactions, no second snapshot of the same document.
  const quiet = await stack.core({ blobs, compactEveryOps: 10, snapshotIntervalMs: 3_600_000 })
  await type('quiet-doc', 40, 502)
  await until('quiet doc committed and compacted', async () => ((await stack.db.query('SELECT op_count FROM docs WHERE tenant = $1 AND doc_id = $2 AND op_count >= 30', ['acme', 'quiet-doc'])).rowCount ?? 0) === 1, 20_000)
  await quiet.stop() // waits for queued snapshots
  t.equal((await stack.db.query('SELECT 1 FROM snapshots WHERE tenant = $1 AND doc_id = $2', ['acme', 'quiet-doc'])).rowCount, 1, 'one snapshot within the interval')
})

// Before the test below, which deletes snap-doc's blobs.
t.test('core - the state at a point falls back to an older snapshot when the blob store fails to give the newest', async (t) => {
  const seqs = await seqsOf('snap-doc')
  const keys = (await stack.db.query<{ blob_key: string }>('SELECT blob_key FROM snapshots WHERE tenant = $1 AND doc_id = $2 ORDER BY stream_seq DESC', ['acme', 'snap-doc'])).rows.map((r) => r.blob_key)
  t.ok(keys.length >= 2, `${keys.length} snapshots: one to fail, an older one to fall back to`)
  const asked: string[] = []
  // The file's store, whose get of the newest snapshot fails as S3's does when it errors or times out.
  const failing: BlobStore = Object.create(blobs, {
    get: {
      value: async (key: string) => {
        asked.push(key)
        if (key === keys[0]) throw new BlobStoreError(`get ${key}: TimeoutError: the request socket timed out`)
        return blobs.get(key)
      },
    },
  })
  const expected = await readStateAt(stack.db, blobs, 'acme', 'snap-doc', { seq: seqs.at(-1)! })
  const at = await readStateAt(stack.db, failing, 'acme', 'snap-doc', { seq: seqs.at(-1)! })
  t.equal(at && textOf(at.update), expected && textOf(expected.update), 'the same document as with every blob there')
  t.equal(at?.seq, seqs.at(-1))
  t.same(asked, keys.slice(0, 2), 'the failed snapshot, then the one before it')
})

t.test('core - the state at a sequence or a time is the snapshot before it plus the op log, even when a snapshot blob is gone', async (t) => {
  const seqs = await seqsOf('snap-doc')
  const typed = await (async () => {
    const r = await stack.db.query<{ update: Buffer }>('SELECT update FROM op_log WHERE tenant = $1 AND doc_id = $2 ORDER BY stream_seq', ['acme', 'snap-doc'])
    const doc = new Y.Doc()
    for (const row of r.rows) Y.applyUpdate(doc, row.update)
    return doc.getText('t').toString()
  })()
  for (const k of [1, 7, 10, 23, 45]) {
    const at = await readStateAt(stack.db, blobs, 'acme', 'snap-doc', { seq: seqs[k - 1]! })
    t.equal(at && textOf(at.update), typed.slice(0, k), `at the ${k}th edit's sequence`)
  }
  t.equal(await readStateAt(stack.db, blobs, 'acme', 'snap-doc', { seq: seqs[0]! - 1 }), null, 'before the first edit there is no document')
  const times = (await stack.db.query<{ t: Date }>('SELECT ingest_ts AS t FROM op_log WHERE tenant = $1 AND doc_id = $2 ORDER BY stream_seq', ['acme', 'snap-doc'])).rows.map((r) => r.t)
  const byTime = await readStateAt(stack.db, blobs, 'acme', 'snap-doc', { time: times[44]! })
  t.equal(byTime && textOf(byTime.update), typed, 'at the last edit time: everything')
  t.equal(await readStateAt(stack.db, blobs, 'other-doc' as never, 'snap-doc', { seq: seqs[44]! }), null, 'another tenant has no such document')

  const keys = (await stack.db.query<{ blob_key: string }>('SELECT blob_key FROM snapshots WHERE tenant = $1 AND doc_id = $2', ['acme', 'snap-doc'])).rows
  for (const { blob_key } of keys) await blobs.delete(blob_key)
  const replayed = await readStateAt(stack.db, blobs, 'acme', 'snap-doc', { seq: seqs[29]! })
  t.equal(replayed && textOf(replayed.update), typed.slice(0, 30), 'every blob expired: replayed from the op log')
})

t.test('core - GET state?at= answers the document as it was, with the sequence it holds; a bad point is 400, another tenant 404', async (t) => {
  const core = await stack.core({ blobs })
  const seqs = await seqsOf('snap-doc')
  const get = async (at: string, tenant = 'acme') => fetch(`${core.url}/v1/docs/snap-doc/state?at=${encodeURIComponent(at)}`, { headers: { authorization: `Bearer ${await token({ tenant })}` } })
  const early = await get(String(seqs[4]!))
  t.equal(early.status, 200)
  t.equal(early.headers.get(STATE_SEQ_HEADER), String(seqs[4]), 'says which sequence it holds')
  t.equal(early.headers.get(LAST_SEQ_HEADER), String(seqs.at(-1)), 'and how current the document is')
  t.equal(textOf(new Uint8Array(await early.arrayBuffer())), 'abcde', 'the first five edits, no later one')
  const firstTime = (await stack.db.query<{ t: Date }>('SELECT ingest_ts AS t FROM op_log WHERE tenant = $1 AND doc_id = $2 AND stream_seq = $3', ['acme', 'snap-doc', seqs[0]])).rows[0]!.t
  const byTime = await get(firstTime.toISOString())
  t.equal(byTime.status, 200)
  t.ok(textOf(new Uint8Array(await byTime.arrayBuffer())).startsWith('a'), 'by ISO time')
  t.equal((await get(new Date(firstTime.getTime() - 60_000).toISOString())).status, 404, 'before the document existed')
  const inParis = new Date(firstTime.getTime() + 3_600_000).toISOString().replace('Z', '+01:00')
  t.equal(textOf(new Uint8Array(await (await get(inParis)).arrayBuffer())), textOf(new Uint8Array(await (await get(firstTime.toISOString())).arrayBuffer())), 'a ±hh:mm zone names the same instant')
  // A time without a zone would be read in the server's timezone; 2026-02-30 would become 2 March.
  for (const at of ['yesterday', firstTime.toISOString().slice(0, -1), '2026-02-30T00:00:00Z', '2025-02-29T00:00:00Z', '2026-01-01T00:00Z']) {
    const res = await get(at)
    t.equal(res.status, 400, `${at}: 400`)
    t.match(await res.text(), /at takes a stream sequence .* zone/, 'says what it takes')
  }
  for (const query of ['?foo=1', `?At=${seqs[4]}`, `?at=${seqs[4]}&at=${seqs[5]}`]) {
    const res = await fetch(`${core.url}/v1/docs/snap-doc/state${query}`, { headers: { authorization: `Bearer ${await token({ tenant: 'acme' })}` } })
    t.equal(res.status, 400, `${query}: 400, not the current state`)
    t.match(await res.text(), /unknown parameter (foo|At); state takes at|at given 2 times/, 'names the parameter')
  }
  t.equal((await get(String(seqs[4]!), 'globex')).status, 404, 'another tenant has no such document')
  await core.stop()
})

t.test('core - snapshots are paced (documents compacting together do not write them all at once); stop writes the queue without pausing', async (t) => {
  const metrics = createCoreMetrics(createRegistry('core', false))
  const states = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => ({ tenant: 'acme', docId: `${prefix}-${i}`, state: Y.encodeStateAsUpdate(new Y.Doc()), lastStreamSeq: i + 1, throughOpId: null, lastIngestTs: Date.now() }))
  const rowsOf = async (prefix: string) => (await stack.db.query<{ n: number }>("SELECT count(*)::int AS n FROM snapshots WHERE tenant = 'acme' AND doc_id LIKE $1", [`${prefix}-%`])).rows[0]!.n
  const written = () => counterValue(metrics.snapshots, { outcome: 'written' })

  const paced = new Snapshots(blobs, stack.db, createLogger('test', 'silent'), metrics, { snapshotIntervalMs: 1, maxPerSecond: 20 })
  const started = Date.now()
  paced.offer(states('paced', 9))
  await until('all 9 written', async () => (await rowsOf('paced')) === 9, 20_000)
  const tookMs = Date.now() - started
  t.ok(tookMs >= 8 * 50, `9 snapshots at 20 per second took ${tookMs} ms (at least 8 gaps of 50 ms)`)

  // At one every 50 s the queue would take minutes; flush (core's stop) writes it at once.
  const slow = new Snapshots(blobs, stack.db, createLogger('test', 'silent'), metrics, { snapshotIntervalMs: 1, maxPerSecond: 0.02 })
  const before = await written()
  slow.offer(states('slow', 5))
  await until('the first written', async () => (await rowsOf('slow')) === 1)
  const flushStarted = Date.now()
  await slow.flush()
  t.equal(await rowsOf('slow'), 5, 'flush wrote the whole queue')
  t.ok(Date.now() - flushStarted < 20_000, `without the 50 s pauses (${Date.now() - flushStarted} ms)`)
  t.equal((await written()) - before, 5, 'counted')
})

t.test('core - a new snapshot tags its document\'s previous one superseded (what the S3 lifecycle rule expires by), never the newest', async (t) => {
  const superseded: string[] = []
  // The real store, its supersede calls recorded (the folder store's own does nothing).
  const recording = Object.assign(Object.create(blobs) as FsBlobStore, { supersede: async (key: string) => void superseded.push(key) })
  const snapshots = new Snapshots(recording, stack.db, createLogger('test', 'silent'), createCoreMetrics(createRegistry('core', false)), { snapshotIntervalMs: 1 })
  const write = async (docId: string, seq: number) => {
    snapshots.offer([{ tenant: 'acme', docId, state: Y.encodeStateAsUpdate(new Y.Doc()), lastStreamSeq: seq, throughOpId: null, lastIngestTs: Date.now() }])
    await snapshots.flush()
  }
  await write('tagged', 3)
  await write('tagged-other', 4)
  t.same(superseded, [], 'a document\'s first snapshot supersedes nothing, another document\'s neither')
  await write('tagged', 8)
  t.same(superseded, [snapshotKey('acme', 'tagged', 3)], 'the second tags the first')
  await write('tagged', 12)
  t.same(superseded, [snapshotKey('acme', 'tagged', 3), snapshotKey('acme', 'tagged', 8)], 'the third tags the second; the newest stays untagged')
})

t.test('core - a document forgotten (deleted or erased) while its snapshot waits to be judged due gets no snapshot', async (t) => {
  const snapshots = new Snapshots(blobs, stack.db, createLogger('test', 'silent'), createCoreMetrics(createRegistry('core', false)), { snapshotIntervalMs: 1 })
  // Another session holds the table: the due() lookup of the document's last snapshot waits on it.
  const holder = await stack.db.connect()
  t.teardown(() => holder.release(true)) // ends the lock whatever failed
  await holder.query('BEGIN')
  await holder.query('LOCK TABLE snapshots IN ACCESS EXCLUSIVE MODE')
  snapshots.offer([{ tenant: 'acme', docId: 'forgotten-while-due', state: Y.encodeStateAsUpdate(new Y.Doc()), lastStreamSeq: 7, throughOpId: null, lastIngestTs: Date.now() }])
  await until('the lookup waits on the lock', async () => (await stack.db.query("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%max(taken_at)%'")).rowCount === 1)
  snapshots.forget('acme', 'forgotten-while-due') // the delete or erase notice
  await holder.query('COMMIT')
  await snapshots.flush()
  t.equal(await blobs.get(snapshotKey('acme', 'forgotten-while-due', 7)), null, 'no blob')
  t.equal((await stack.db.query("SELECT 1 FROM snapshots WHERE doc_id = 'forgotten-while-due'")).rowCount, 0, 'no row')
})
