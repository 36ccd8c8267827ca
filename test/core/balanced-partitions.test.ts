import t from 'tap'
import pg from 'pg'
import { fairShare } from '../../core/balance.ts'
import { LEASE_SESSION_PREFIX } from '../../core/lease.ts'
import { setup, token, type ServiceProcess } from '../helpers/setup.ts'
import { materializedText, until, yclient, type TestClient } from '../helpers/client.ts'
import { leaseSessions } from '../helpers/partitions.ts'
import { opLogProblems } from '../helpers/typed.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())

/** Partitions held by each core process (by its os pid), from the lease sessions' names. */
async function heldByCore(): Promise<{ byCore: Map<number, number>; owned: number }> {
  const sessions = await leaseSessions(stack.db)
  const byCore = new Map<number, number>()
  for (const s of sessions) {
    const pid = Number(/-pid(\d+)$/.exec(s.app)?.[1])
    byCore.set(pid, (byCore.get(pid) ?? 0) + 1)
  }
  return { byCore, owned: new Set(sessions.map((s) => s.partition)).size }
}

/** True when every partition has one holder and the given cores hold exactly the fair shares. */
async function balancedOver(cores: ServiceProcess[]): Promise<boolean> {
  const { byCore, owned } = await heldByCore()
  const expected = cores.map((_, rank) => Math.floor(stack.partitions / cores.length) + (rank < stack.partitions % cores.length ? 1 : 0)).sort()
  const held = cores.map((c) => byCore.get(c.child.pid!) ?? 0).sort()
  return owned === stack.partitions && byCore.size === cores.length && JSON.stringify(held) === JSON.stringify(expected)
}

t.test('core - fair shares add up to the partitions and differ by at most one', async (t) => {
  for (const partitions of [1, 4, 16, 17]) {
    for (const cores of [1, 2, 3, 5]) {
      const members = Array.from({ length: cores }, (_, i) => 100 + i)
      const shares = members.map((own) => fairShare(partitions, { members, own }))
      t.equal(shares.reduce((a, b) => a + b, 0), partitions, `${partitions} partitions over ${cores} cores`)
      t.ok(Math.max(...shares) - Math.min(...shares) <= 1, `${shares.join('/')} is even`)
    }
  }
  t.equal(fairShare(16, { members: [100, 200], own: 300 }), 5, 'a core not seen yet counts itself last of three')
})

t.test('core - three cores share the partitions; one joins and one is killed under typing load: nothing lost or twice, order kept, owned again within 10 s', async (t) => {
  const cores = [await stack.process('core'), await stack.process('core')]
  await until('two cores hold half the partitions each', () => balancedOver(cores), 20_000)
  const edge = await stack.edge()
  const tok = await token({ tenant: 'acme' })
  const docs = Array.from({ length: 8 }, (_, i) => `balanced-${i}`)
  const clients: TestClient[] = docs.map((d) => yclient(edge.url, d, tok))
  t.teardown(() => clients.forEach((c) => c.destroy()))
  await Promise.all(clients.map((c) => c.synced()))

  // Each client appends a character every 30 ms until told to stop; what it typed is the truth.
  const typed = docs.map(() => '')
  let typing = true
  const typers = clients.map(async (c, i) => {
    for (let n = 0; typing; n++) {
      const ch = String.fromCharCode(97 + ((n + i) % 26))
      c.text.insert(c.text.length, ch)
      typed[i] += ch
      await new Promise((r) => setTimeout(r, 30))
    }
  })
  t.teardown(() => {
    typing = false
  })
  const typedSoFar = () => typed.reduce((n, s) => n + s.length, 0)
  await until('some typing done', () => typedSoFar() > 200)

  cores.push(await stack.process('core'))
  const joinedAt = Date.now()
  await until('the three cores hold their fair shares', () => balancedOver(cores), 20_000)
  const joinMs = Date.now() - joinedAt
  t.ok(joinMs < 10_000, `rebalanced over three cores ${joinMs} ms after the third answered /healthz`)

  const before = typedSoFar()
  await until('typing goes on after the join', () => typedSoFar() > before + 200)
  const victim = cores.shift()!
  await victim.kill9()
  const killedAt = Date.now()
  await until('the two survivors own every partition, half each', () => balancedOver(cores), 15_000)
  const takeoverMs = Date.now() - killedAt
  t.ok(takeoverMs < 10_000, `the killed core's partitions owned again ${takeoverMs} ms after kill -9`)

  const afterKill = typedSoFar()
  await until('typing goes on after the kill', () => typedSoFar() > afterKill + 200)
  typing = false
  await Promise.all(typers)

  const core = cores[0]!
  for (const [i, docId] of docs.entries()) {
    await until(`${docId} materialized`, async () => (await materializedText(core.url, docId, tok)) === typed[i], 30_000).catch((err: unknown) => t.comment((err as Error).message))
    t.equal(await materializedText(core.url, docId, tok), typed[i], `${docId}: the materialized text is what was typed`)
    t.same(await opLogProblems(stack.db, 'acme', docId, typed[i]!), [], `${docId}: the op log holds each typed character once`)
  }
  // Per-document order: each document's rows were committed (op_log id) in stream order.
  const outOfOrder = await stack.db.query(
    `SELECT doc_id, count(*)::int AS n FROM (
       SELECT doc_id, stream_seq < lag(stream_seq) OVER (PARTITION BY tenant, doc_id ORDER BY id) AS back FROM op_log WHERE tenant = 'acme'
     ) r WHERE back GROUP BY doc_id`,
  )
  t.same(outOfOrder.rows, [], 'no document has an update committed after a later one of its stream')
  for (const c of cores) await c.kill9()
})

t.test('core - a partition nobody takes (a core counted live that does not take its share) is taken over the share after the lease TTL', async (t) => {
  // A session named like a core's lease session that keeps renewing but never locks anything.
  const ghost = new pg.Client({ connectionString: stack.pg.url, application_name: `${LEASE_SESSION_PREFIX}pid0` })
  await ghost.connect()
  const renew = setInterval(() => void ghost.query('SELECT 1').catch(() => undefined), 300)
  t.teardown(async () => {
    clearInterval(renew)
    await ghost.end()
  })
  const core = await stack.core({ leaseTtlMs: 2_000, leaseRenewMs: 500 })
  t.teardown(() => core.stop())
  const held = async () => (await core.core.metrics.leasesHeld.get()).values[0]?.value ?? 0
  await until('the core holds its share of two', async () => (await held()) >= stack.partitions / 2, 15_000)
  await until('and then every partition', async () => (await held()) === stack.partitions, 15_000)
  // Positive signal that time passed: the probe (named by this process's pid) looked five more times.
  const looks = new Set<string>()
  await until('five more looks of the lease probe', async () => {
    const r = await stack.db.query("SELECT query_start::text AS at FROM pg_stat_activity WHERE application_name = $1 AND query ILIKE '%pg_locks%'", [`docflow-core-probe-pid${process.pid}`])
    for (const row of r.rows) looks.add(row.at)
    return looks.size >= 5
  }, 30_000)
  t.equal(await held(), stack.partitions, 'it keeps them: handing one back would leave it unowned again')
  t.equal((await core.core.metrics.partitionsHandedBack.get()).values[0]?.value ?? 0, 0, 'nothing handed back')
  t.equal((await core.core.metrics.fairShare.get()).values[0]?.value, stack.partitions / 2, 'its fair share still counts the ghost')
  t.ok(((await core.core.metrics.orphansTaken.get()).values[0]?.value ?? 0) >= stack.partitions / 2, 'the rest taken as orphans')
})
