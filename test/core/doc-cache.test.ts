import t from 'tap'
import { readDocState } from '../../core/store.ts'
import { DocCache, DocCacheBudget } from '../../core/doc-cache.ts'
import * as Y from 'yjs'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { ServiceUser } from '../../contracts/mod.ts'
import { edit, publishEdit } from '../helpers/edits.ts'
import { setup } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'
import { byPartition, partitionsOf } from '../helpers/partitions.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const js = jetstream(await stack.connect())
const jsm = await jetstreamManager(await stack.connect(ServiceUser.Admin))

const opRows = async (docIds: string[]) => (await stack.db.query('SELECT count(*)::int AS n FROM op_log WHERE doc_id = ANY($1)', [docIds])).rows[0].n as number

t.test('core - a batch touching more documents than the doc cache holds commits them all', async (t) => {
  const first = await stack.core()
  const candidates = Array.from({ length: 48 }, (_, i) => `cache-${i}`)
  const updates = new Map<string, Uint8Array[]>()
  for (const [i, doc] of candidates.entries()) {
    const update = edit(`first ${i} `, 1_000 + i)
    updates.set(doc, [update])
    await publishEdit(js, 'acme', doc, update)
  }
  await until('first edits committed', async () => (await opRows(candidates)) === candidates.length)
  const [, docs] = byPartition(await partitionsOf(stack.db, jsm, 'acme', candidates))[0]!
  const group = docs.slice(0, 4)
  t.ok(group.length >= 3, `docs of one partition: ${group.join(', ')}`)
  await first.stop()

  // Queued while no core runs, so one batch holds them all: a doc, then others, then it again.
  for (let round = 0; round < 5; round++) {
    for (const [i, doc] of group.entries()) {
      const update = edit(`r${round}d${i} `, 2_000 + round * 10 + i)
      updates.get(doc)!.push(update)
      await publishEdit(js, 'acme', doc, update)
    }
  }
  const second = await stack.core({ maxDocs: 2 })
  await until('every edit committed', async () => (await opRows(group)) === group.length * 6, 20_000)
  for (const doc of group) {
    const reference = new Y.Doc()
    for (const u of updates.get(doc)!) Y.applyUpdate(reference, u)
    const state = (await readDocState(stack.db, 'acme', doc))!
    const materialized = new Y.Doc()
    Y.applyUpdate(materialized, state)
    t.equal(materialized.getText('t').toString(), reference.getText('t').toString(), `${doc} holds all its edits`)
  }
  t.equal((await second.core.metrics.workerErrors.get()).values.reduce((n, v) => n + v.value, 0), 0, 'no batch failed')
  await second.stop()
})

/** A stored document of about `bytes` bytes (one insert of that many characters). */
const storedDoc = (bytes: number, clientID: number) => ({ state: edit('x'.repeat(bytes), clientID), tail: [], tailUsers: [], stateOwners: null })

t.test('core - the doc cache evicts least recently used unpinned docs past its byte budget, and reports bytes and evictions', async (t) => {
  let reported = 0
  let evictions = 0
  const budget = new DocCacheBudget(10_000, { bytes: (delta) => (reported += delta), evicted: () => evictions++ })
  const cache = new DocCache({ maxDocs: 1_000, budget })
  const a = cache.add('acme', 'a', storedDoc(4_000, 1))
  cache.add('acme', 'b', storedDoc(4_000, 2))
  t.ok(cache.bytes > 8_000 && cache.bytes < 8_200, `two docs of about 4 KB: ${cache.bytes} bytes, estimated from their stored bytes`)
  t.equal(reported, cache.bytes, 'the budget is told every byte')
  cache.get('acme', 'a') // a is now more recent than b
  cache.pin(a)
  cache.add('acme', 'c', storedDoc(4_000, 3))
  t.ok(cache.get('acme', 'a') && cache.get('acme', 'c'), 'the pinned doc and the one just added stay')
  t.notOk(cache.get('acme', 'b'), 'the least recently used unpinned doc went')
  t.equal(evictions, 1)
  cache.pin(cache.get('acme', 'c')!) // a batch pins every doc it touches
  cache.add('acme', 'd', storedDoc(4_000, 4))
  t.ok(cache.get('acme', 'a') && cache.get('acme', 'c'), 'pinned docs are kept even over the budget')
  t.ok(budget.over, 'over the budget while pinned')
  cache.unpinAll()
  t.notOk(budget.over, 'unpinning trims back under the budget')
  t.equal(reported, cache.bytes, 'the gauge follows evictions')
  // Committed updates grow a doc's estimate without encoding it; a compaction resets it to the state's size.
  const d = cache.add('acme', 'e', storedDoc(100, 5))
  const before = d.bytes
  cache.committedOps(d, 2, 300, 10, Date.now())
  t.equal(d.bytes, before + 300, 'each committed update adds its bytes')
  cache.compactedState(d, 4_100, 0)
  t.equal(d.bytes, 4_100, 'a compaction sets the state size')
  t.equal(reported, cache.bytes)
  cache.clear()
  t.equal(reported, 0, 'a cleared cache holds nothing')
})

t.test('core - a document forgotten (deleted or erased) while the batch in hand pins it stays that batch\'s one copy, and goes when unpinned', async (t) => {
  const cache = new DocCache({ maxDocs: 1_000 })
  const pinned = cache.add('acme', 'held', storedDoc(10, 6))
  cache.pin(pinned)
  cache.add('acme', 'idle', storedDoc(10, 7))
  cache.forget('acme', 'held')
  cache.forget('acme', 'idle')
  t.notOk(cache.get('acme', 'idle'), 'an unpinned doc goes at once')
  // Gone mid-batch, the batch's next update for it would reload the stored state into a second
  // copy, and the state written from the first copy would lack that update.
  t.equal(cache.get('acme', 'held'), pinned, 'the batch keeps applying to the copy it pinned')
  cache.unpinAll()
  t.notOk(cache.get('acme', 'held'), 'and it goes once the batch is done')
})

t.test('core - a core under a small CORE_DOC_CACHE_MB evicts by bytes and still commits every edit', async (t) => {
  const core = await stack.core({ maxDocCacheBytes: 20_000 })
  const docs = Array.from({ length: 12 }, (_, i) => `bytes-${i}`)
  for (const [i, doc] of docs.entries()) await publishEdit(js, 'acme', doc, edit('y'.repeat(4_000), 5_000 + i))
  await until('every edit committed', async () => (await opRows(docs)) === docs.length, 20_000)
  const metric = async (name: 'docCacheBytes' | 'docCacheEvictions') => (await core.core.metrics[name].get()).values.reduce((n, v) => n + v.value, 0)
  t.ok((await metric('docCacheEvictions')) > 0, `evicted ${await metric('docCacheEvictions')} docs`)
  t.ok((await metric('docCacheBytes')) <= 20_000, `holds ${await metric('docCacheBytes')} bytes, at most the limit`)
  for (const doc of docs) t.ok(((await readDocState(stack.db, 'acme', doc))?.byteLength ?? 0) > 4_000, `${doc} materialized`)
  await core.stop()
})
