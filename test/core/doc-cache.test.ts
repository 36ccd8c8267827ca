import t from 'tap'
import { readDocState } from '../../core/store.ts'
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
})
