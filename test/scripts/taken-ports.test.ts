import t, { type Test } from 'tap'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { startNatsServer } from '../../scripts/lib/nats-server.ts'
import { startPostgres } from '../../scripts/lib/postgres.ts'
import { freePort } from '../../scripts/lib/proc.ts'

// Two suites (or a leftover server) can end up with the same port. The second server then fails
// to bind and exits, but another server already answers there: taking that one for ours mixed
// two stacks' data and failed tests when the other stack stopped ("the database system is
// shutting down"). Starting must refuse, saying the port is taken, so the caller picks another.

const home = mkdtempSync(join(tmpdir(), 'docflow-taken-ports-'))
// Reachable by the postgres user, so each cluster lives inside `home` and goes with it (in a
// private folder it would live under the postgres user's home and outlive the test).
chmodSync(home, 0o755)
t.teardown(() => rmSync(home, { recursive: true, force: true }))

t.test('scripts - PostgreSQL on a port another PostgreSQL answers is refused as address already in use; the other keeps its data', async (t) => {
  const port = await freePort()
  const first = await startPostgres({ dir: join(home, 'pg-first'), port, fsync: false })
  t.teardown(() => first.stop())
  const db = new pg.Client(first.url)
  await db.connect()
  t.teardown(() => db.end())
  await db.query("CREATE TABLE mine AS SELECT 'first' AS v")

  await t.rejects(startPostgres({ dir: join(home, 'pg-second'), port, fsync: false }), /Address already in use/, 'the second start fails, naming the taken port')
  t.same((await db.query('SELECT v FROM mine')).rows, [{ v: 'first' }], 'the first server still serves its own data')
})

t.test('scripts - nats-server whose monitor port another nats-server answers is refused as address already in use', async (t) => {
  const first = await startNatsServer({ dir: join(home, 'nats-first'), port: await freePort(), monitorPort: await freePort(), maxFileStore: '1GB', serviceMaxFileBytes: 64 * 1024 ** 2 })
  t.teardown(() => first.stop())
  await t.rejects(
    startNatsServer({ dir: join(home, 'nats-second'), port: await freePort(), monitorPort: first.monitorPort, maxFileStore: '1GB', serviceMaxFileBytes: 64 * 1024 ** 2 }),
    /address already in use/i,
    'the second start fails instead of taking the first server for its own',
  )
  t.ok((await fetch(`http://127.0.0.1:${first.monitorPort}/healthz`)).ok, 'the first server still answers')
})

/** A listener that accepts connections and never answers (what a PostgreSQL client meets on a nats-server monitor port). */
async function silentListener(t: Test): Promise<number> {
  const sockets = new Set<Socket>()
  const server = createServer((s) => sockets.add(s))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    server.close()
  })
  return (server.address() as AddressInfo).port
}

t.test('scripts - PostgreSQL on a port held by something that accepts and never answers fails as address already in use, not a hang', async (t) => {
  const port = await silentListener(t)
  await t.rejects(startPostgres({ dir: join(home, 'pg-silent'), port, fsync: false }), /Address already in use/i)
})

t.test('scripts - nats-server whose client or monitor port is held by something that never answers fails as address already in use, not a hang', async (t) => {
  const options = (name: string) => ({ dir: join(home, name), maxFileStore: '1GB', serviceMaxFileBytes: 64 * 1024 ** 2 })
  await t.rejects(startNatsServer({ ...options('nats-silent-monitor'), port: await freePort(), monitorPort: await silentListener(t) }), /address already in use/i, 'monitor port')
  await t.rejects(startNatsServer({ ...options('nats-silent-client'), port: await silentListener(t), monitorPort: await freePort() }), /address already in use/i, 'client port')
})
