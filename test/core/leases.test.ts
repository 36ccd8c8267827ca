import t from 'tap'
import * as Y from 'yjs'
import { jetstream } from '@nats-io/jetstream'
import { ServiceUser } from '../../contracts/mod.ts'
import { DEFAULT_LEASE_TIMING, LeaseHolder } from '../../core/lease.ts'
import { migrate } from '../../core/migrate.ts'
import { setup } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'
import { edit, publishEdit } from '../helpers/edits.ts'
import { opLogProblems } from '../helpers/typed.ts'
import { leaseSessions } from '../helpers/partitions.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())

/** How many sessions hold each partition's lease. */
async function leaseHolders(): Promise<Map<number, number>> {
  const holders = new Map<number, number>()
  for (const { partition } of await leaseSessions(stack.db)) holders.set(partition, (holders.get(partition) ?? 0) + 1)
  return holders
}

t.test('core - exactly one worker owns each partition; a second core takes its fair share, and all of them on kill -9', async (t) => {
  const first = await stack.process('core')
  await until('first core owns every partition', async () => (await leaseHolders()).size === stack.partitions)
  const second = await stack.core()
  const half = Math.floor(stack.partitions / 2)
  const secondHeld = async () => (await second.core.metrics.leasesHeld.get()).values[0]?.value ?? 0
  await until('the second core holds its fair share', async () => {
    const held = await secondHeld()
    return held === half || held === stack.partitions - half
  }, 15_000)
  const holders = await leaseHolders()
  t.equal(holders.size, stack.partitions, 'every partition is owned')
  t.ok([...holders.values()].every((n) => n === 1), 'by exactly one session each')
  t.equal((await second.core.metrics.partitionsHandedBack.get()).values[0]?.value ?? 0, 0, 'the second core gave nothing back: it took only partitions the first handed back')

  const js = jetstream(await stack.connect(ServiceUser.Edge))
  for (let i = 0; i < 20; i++) await publishEdit(js, 'acme', `lease-${i}`, edit(`before ${i}`, 100 + i))
  await until('edits before the crash committed', async () => (await stack.db.query('SELECT count(*)::int AS n FROM op_log')).rows[0].n === 20)
  await first.kill9()
  for (let i = 0; i < 20; i++) await publishEdit(js, 'acme', `lease-${i}`, edit(`after ${i}`, 200 + i))
  await until('the second core owns every partition', async () => (await secondHeld()) === stack.partitions, 15_000)
  await until('edits after the crash committed by the second core', async () => (await stack.db.query('SELECT count(*)::int AS n FROM op_log')).rows[0].n === 40, 15_000)
  for (let i = 0; i < 20; i++) {
    const expected = new Y.Doc()
    for (const update of [edit(`before ${i}`, 100 + i), edit(`after ${i}`, 200 + i)]) Y.applyUpdate(expected, update)
    t.same(await opLogProblems(stack.db, 'acme', `lease-${i}`, expected.getText('t').toString()), [], `lease-${i}: both edits logged, each character once`)
  }
})

t.test('core - refuses a partition count other than the one its database was first used with', async (t) => {
  const other = stack.partitions * 2
  await t.rejects(stack.core({ editPartitions: other }), { name: 'DeploymentMismatchError', message: new RegExp(`split into ${stack.partitions} partitions .*DOCFLOW_EDIT_PARTITIONS=${other} `) })
  const r = await stack.db.query("SELECT value FROM deployment_settings WHERE name = 'edit_partitions'")
  t.same(r.rows, [{ value: String(stack.partitions) }], 'the recorded count is unchanged')
})

t.test('core - callers that find the lease session lost at once share one new session', async (t) => {
  const holder = new LeaseHolder(stack.pg.url, DEFAULT_LEASE_TIMING)
  t.teardown(() => holder.close())
  const lease = await holder.tryAcquire(9_999) // a lock no core of this file takes: only to learn of the loss
  t.ok(lease, 'the first session holds a lease')
  await stack.db.query('SELECT pg_terminate_backend($1)', [await holder.open()])
  await lease!.whenLost
  // Two workers retrying together: a second new session would live on unused, renewing, and
  // count as another live core in the fair share.
  const [a, b] = await Promise.all([holder.open(), holder.open()])
  t.equal(a, b, 'both get the same new session')
})

t.test('core - a group commit PostgreSQL refuses for one batch commits the other batches of the group alone', async (t) => {
  const c = await stack.db.connect()
  await migrate(c).finally(() => c.release()) // as core does at start: this test runs none
  const holder = new LeaseHolder(stack.pg.url, DEFAULT_LEASE_TIMING)
  t.teardown(() => holder.close())
  const [bad, good] = [await holder.tryAcquire(9_001), await holder.tryAcquire(9_002)]
  const batch = (docId: string, userId: string) => ({
    consumer: `test/${docId}`,
    streamSeq: 1,
    ops: [{ tenant: 'acme', docId, streamSeq: 1, msgId: `${docId}-1`, userId, edgeId: 'test', update: edit('x', 1), status: 'applied' as const, ingestTs: Date.now(), eventTs: Date.now() }],
    docs: [],
    deadLetters: [],
  })
  // Handed in together, so they share one group commit. PostgreSQL holds no NUL in text.
  const [refused, other] = await Promise.allSettled([bad!.commit(batch('group-bad', 'nul\u0000')), good!.commit(batch('group-good', 'alice'))])
  t.equal(refused.status, 'rejected', 'the batch PostgreSQL refuses fails')
  t.equal(other.status, 'fulfilled', 'the other batch of its group commits')
  const rows = await stack.db.query("SELECT doc_id FROM op_log WHERE doc_id IN ('group-bad', 'group-good')")
  t.same(rows.rows, [{ doc_id: 'group-good' }])
})
