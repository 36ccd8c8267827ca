import t from 'tap'
import * as Y from 'yjs'
import { jetstream } from '@nats-io/jetstream'
import { ServiceUser } from '../../contracts/mod.ts'
import { edit, publishEdit } from '../helpers/edits.ts'
import { setup } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'
import { leaseSessions } from '../helpers/partitions.ts'
import { readDocState } from '../../core/store.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())

/** application_name of the session holding each partition's lease. */
const leaseHolders = async () => new Map((await leaseSessions(stack.db)).map((s) => [s.partition, s.app]))
const heldBy = (holders: Map<number, string>, pid: number) => [...holders.values()].filter((app) => app.endsWith(`-pid${pid}`)).length
const opRows = async () => (await stack.db.query('SELECT count(*)::int AS n FROM op_log')).rows[0].n as number

t.test('core - a core paused with SIGSTOP loses its partitions to the other core within 10 s, cannot commit when it resumes, then takes its fair share back', async (t) => {
  const paused = await stack.process('core')
  const pausedPid = paused.child.pid!
  await until('the process core owns every partition', async () => heldBy(await leaseHolders(), pausedPid) === stack.partitions, 20_000)
  const standby = await stack.core()
  const js = jetstream(await stack.connect(ServiceUser.Edge))
  const typed = new Map<string, Uint8Array[]>()
  let clientID = 1
  const publishRound = async (label: string) => {
    for (let i = 0; i < 16; i++) {
      const docId = `failover-${i}`
      const update = edit(`${label}${i} `, clientID++)
      typed.set(docId, [...(typed.get(docId) ?? []), update])
      await publishEdit(js, 'acme', docId, update)
    }
  }
  await publishRound('before')
  await until('edits before the pause committed', async () => (await opRows()) === 16)

  paused.child.kill('SIGSTOP')
  const pausedAt = Date.now()
  await publishRound('during')
  await until('the standby owns every partition', async () => heldBy(await leaseHolders(), process.pid) === stack.partitions, 15_000)
  const takeoverMs = Date.now() - pausedAt
  t.ok(takeoverMs < 10_000, `partitions taken over ${takeoverMs} ms after the pause`)
  await until('edits published during the pause committed by the standby', async () => (await opRows()) === 32, 15_000)

  paused.child.kill('SIGCONT')
  const resumedAt = new Date()
  // Its old session was ended: it opens a new one, counts as live again and gets half back.
  const half = stack.partitions / 2
  await until('the resumed core holds its fair share again', async () => {
    const holders = await leaseHolders()
    return heldBy(holders, pausedPid) === half && heldBy(holders, process.pid) === half
  }, 15_000)
  t.ok(Date.now() - resumedAt.getTime() < 10_000, 'rebalanced within 10 s of the resume')
  await publishRound('after')
  await until('edits after the resume committed', async () => (await opRows()) === 48, 15_000)
  t.equal(paused.child.exitCode, null, 'the resumed core is still running')
  t.equal((await stack.db.query('SELECT count(DISTINCT (doc_id, msg_id))::int AS n FROM op_log')).rows[0].n, 48, 'every edit is in the op log')
  const docs = (await stack.db.query('SELECT doc_id, count(*)::int AS ops FROM op_log GROUP BY doc_id ORDER BY doc_id')).rows
  t.equal(docs.length, 16)
  for (const row of docs) {
    t.equal(row.ops, 3, `${row.doc_id}: three commits of an op, none twice`)
    const reference = new Y.Doc()
    for (const u of typed.get(row.doc_id)!) Y.applyUpdate(reference, u)
    const materialized = new Y.Doc()
    Y.applyUpdate(materialized, (await readDocState(stack.db, 'acme', row.doc_id))!)
    t.equal(materialized.getText('t').toString(), reference.getText('t').toString(), `${row.doc_id}: every edit once`)
  }
  t.equal((await standby.core.metrics.leaseTakeovers.get()).values[0]?.value, 1, 'the standby ended the paused holder\'s lease session (one per core process)')
})
