import t from 'tap'
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { postmasterPidFile, startPostgres } from '../../scripts/lib/postgres.ts'
import { alive, freePort } from '../../scripts/lib/proc.ts'

t.test('scripts - PostgreSQL starts in a private (0700) folder and keeps its data across a restart', async (t) => {
  const home = mkdtempSync(join(tmpdir(), 'docflow-private-'))
  t.equal(statSync(home).mode & 0o777, 0o700, 'the folder is private, as mkdtemp makes it')
  const dir = join(home, 'data', 'pg')
  const port = await freePort()
  let clusterDir = ''
  t.teardown(() => {
    rmSync(home, { recursive: true, force: true })
    if (clusterDir && !clusterDir.startsWith(home)) rmSync(clusterDir, { recursive: true, force: true })
  })

  let server = await startPostgres({ dir, port, fsync: false })
  clusterDir = server.clusterDir
  t.equal(statSync(home).mode & 0o777, 0o700, 'the private folder keeps its permissions')
  const pid = Number(readFileSync(postmasterPidFile(dir), 'utf8').split('\n')[0])
  t.equal(pid, server.process.pid, 'the postmaster.pid found from the data folder is the running server')
  const db = new pg.Client(server.url)
  await db.connect()
  await db.query('CREATE TABLE kept (v text)')
  await db.query("INSERT INTO kept VALUES ('survives a restart')")
  await db.end()
  await server.stop()
  t.notOk(alive(pid), 'stopped')

  server = await startPostgres({ dir, port, fsync: false })
  t.equal(server.clusterDir, clusterDir, 'the same cluster on restart')
  const again = new pg.Client(server.url)
  await again.connect()
  t.same((await again.query('SELECT v FROM kept')).rows, [{ v: 'survives a restart' }])
  await again.end()
  await server.stop()

  // A reset (the data folder deleted) starts a fresh cluster; the old one is moved aside, not reused.
  rmSync(join(home, 'data'), { recursive: true, force: true })
  const lines: string[] = []
  server = await startPostgres({ dir, port, fsync: false, say: (line) => lines.push(line) })
  const aside = lines.map((l) => /moved the cluster of a deleted data folder aside to (\S+)/.exec(l)?.[1]).find(Boolean)
  t.teardown(() => aside && rmSync(aside, { recursive: true, force: true }))
  t.ok(aside && existsSync(aside), 'the old cluster is kept aside')
  const fresh = new pg.Client(server.url)
  await fresh.connect()
  t.equal((await fresh.query("SELECT to_regclass('kept') AS t")).rows[0].t, null, 'the new data folder has an empty database')
  await fresh.end()
  await server.stop()
})
