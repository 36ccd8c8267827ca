import { execFileSync, type ChildProcess } from 'node:child_process'
import { chownSync, existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'
import { postgresBinDir } from './binaries.mjs'
import { GaveUp, exited, lastLines, spawnLogged, stopStale, terminate, waitFor } from './proc.ts'

export interface Postgres {
  /** URL of the `docflow` database. */
  url: string
  port: number
  process: ChildProcess
  stop(): Promise<void>
}

export interface PostgresOptions {
  /** Folder holding the cluster (`pgdata/`), its socket and log. */
  dir: string
  port: number
  /** Off in tests only: they never outlive an OS crash. Default true. */
  fsync?: boolean
}

const SUPERUSER = 'docflow'
const DATABASE = 'docflow'

/**
 * PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user
 * the Debian package creates; as anyone else it runs as that user.
 */
function runAs(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined
  const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim())
  const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim())
  return { uid, gid }
}

/** Creates the cluster on first use, starts it on `port`, and makes sure the database exists. */
export async function startPostgres(o: PostgresOptions): Promise<Postgres> {
  const bin = postgresBinDir()
  if (!bin) throw new Error('PostgreSQL server is not installed (apt-get install postgresql; npm start installs it)')
  const owner = runAs()
  const dataDir = join(o.dir, 'pgdata')
  mkdirSync(o.dir, { recursive: true })
  if (owner) chownSync(o.dir, owner.uid, owner.gid)
  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    try {
      execFileSync(join(bin, 'initdb'), ['-D', dataDir, '-U', SUPERUSER, '-A', 'trust', '-E', 'UTF8', '--no-locale', ...(o.fsync === false ? ['-N'] : [])], { ...owner, stdio: 'pipe' })
    } catch (err) {
      throw new Error(`initdb failed in ${dataDir}: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`, { cause: err })
    }
  }
  // A postmaster left running by a killed supervisor still holds the data folder.
  stopStale(join(dataDir, 'postmaster.pid'), 'postgres', 'SIGINT')
  const args = ['-D', dataDir, '-p', String(o.port), '-k', o.dir, '-h', '127.0.0.1', '-c', 'max_connections=200']
  if (o.fsync === false) args.push('-c', 'fsync=off', '-c', 'full_page_writes=off')
  const child = spawnLogged(join(bin, 'postgres'), args, join(o.dir, 'postgres.log'), { ...owner })
  let died = false
  void exited(child).then(() => (died = true))
  const adminUrl = `postgres://${SUPERUSER}@127.0.0.1:${o.port}/postgres`
  await waitFor(`PostgreSQL on port ${o.port} (log: ${join(o.dir, 'postgres.log')})`, async () => {
    if (died) throw new GaveUp(`postgres exited: ${lastLines(join(o.dir, 'postgres.log'))}`)
    const c = new pg.Client(adminUrl)
    await c.connect()
    try {
      const exists = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE])
      if (exists.rowCount === 0) await c.query(`CREATE DATABASE ${DATABASE}`)
    } finally {
      await c.end()
    }
    return true
  })
  return {
    url: `postgres://${SUPERUSER}@127.0.0.1:${o.port}/${DATABASE}`,
    port: o.port,
    process: child,
    // SIGINT is PostgreSQL's fast shutdown: roll back open transactions, checkpoint, exit.
    stop: () => terminate(child, 'SIGINT', 30_000),
  }
}
