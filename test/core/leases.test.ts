import t from 'tap'
import * as Y from 'yjs'
import { jetstream } from '@nats-io/jetstream'
import { ServiceUser } from '../../contracts/mod.ts'
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

t.test('core - exactly one worker owns each partition; a standby core takes over on kill -9', async (t) => {
  const first = await stack.process('core')
  await until('first core owns every partition', async () => (await leaseHolders()).size === stack.partitions)
  const standby = await stack.core()
  // Positive signal that the standby has decided: its lease probe (lease-probe.ts, named by
  // this process's pid) has finished two looks at the leases, so any worker the first look
  // woke has tried its lease before we count.
  const looks = new Set<string>()
  await until('the standby looked at the leases twice', async () => {
    const r = await stack.db.query("SELECT query_start::text AS at FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle' AND query ILIKE '%pg_locks%'", [`docflow-core-probe-pid${process.pid}`])
    for (const row of r.rows) looks.add(row.at)
    return looks.size >= 2
  }, 15_000)
  const holders = await leaseHolders()
  t.equal(holders.size, stack.partitions, 'every partition is owned')
  t.ok([...holders.values()].every((n) => n === 1), 'by exactly one session each')
  t.equal(await standby.core.metrics.leasesHeld.get().then((m) => m.values[0]?.value ?? 0), 0, 'the second core waits as a standby')

  const js = jetstream(await stack.connect(ServiceUser.Edge))
  for (let i = 0; i < 20; i++) await publishEdit(js, 'acme', `lease-${i}`, edit(`before ${i}`, 100 + i))
  await until('edits before the crash committed', async () => (await stack.db.query('SELECT count(*)::int AS n FROM op_log')).rows[0].n === 20)
  await first.kill9()
  for (let i = 0; i < 20; i++) await publishEdit(js, 'acme', `lease-${i}`, edit(`after ${i}`, 200 + i))
  await until('standby owns every partition', async () => (await standby.core.metrics.leasesHeld.get()).values[0]?.value === stack.partitions, 15_000)
  await until('edits after the crash committed by the standby', async () => (await stack.db.query('SELECT count(*)::int AS n FROM op_log')).rows[0].n === 40, 15_000)
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
