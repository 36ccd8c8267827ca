import { execFileSync, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chownSync, existsSync, mkdirSync, readFileSync, realpathSync, renameSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import pg from 'pg'
import { postgresBinDir } from './binaries.mjs'
import { CHECK_TIMEOUT_MS, GaveUp, exited, lastLines, spawnLogged, stopStale, terminate, waitFor } from './proc.ts'

export interface Postgres {
  /** URL of the `docflow` database. */
  url: string
  port: number
  /** Folder holding `pgdata/` and the unix socket: `dir`, or one the postgres user can reach. */
  clusterDir: string
  process: ChildProcess
  stop(): Promise<void>
}

export interface PostgresOptions {
  /** Folder of this PostgreSQL: its log, and its cluster (`pgdata/`, socket) when the server's user can reach it. */
  dir: string
  port: number
  /** Off in tests only: they never outlive an OS crash. Default true. */
  fsync?: boolean
  /** Where a line about the cluster's location goes (as root in a private folder). Default: nowhere. */
  say?: (line: string) => void
  /** Own process group, so a terminal's Ctrl-C reaches only the supervisor, which stops parts in order. Default false. */
  ownProcessGroup?: boolean
}

const SUPERUSER = 'docflow'
const DATABASE = 'docflow'
/** File in `dir` naming the folder that holds the cluster when it is not `dir` itself. */
const LOCATION_FILE = 'cluster-location'

interface Owner {
  uid: number
  gid: number
  home: string
}

/**
 * PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user
 * the Debian package creates; as anyone else it runs as that user.
 */
function runAs(): Owner | undefined {
  if (process.getuid?.() !== 0) return undefined
  const [, , uid, gid, , home] = execFileSync('getent', ['passwd', 'postgres']).toString().trim().split(':')
  return { uid: Number(uid), gid: Number(gid), home: home ?? '' }
}

/** Whether `owner` can enter `dir` (every parent folder must let it through). */
function reachable(dir: string, owner: Owner): boolean {
  return spawnSync('test', ['-x', dir], { uid: owner.uid, gid: owner.gid }).status === 0
}

/**
 * The folder holding the cluster and its socket. Invariant: the same `dir` always maps to the
 * same cluster — a location chosen once is recorded in `dir` and reused on every start. As
 * root, when the postgres user cannot reach `dir` (a 0700 home or mkdtemp folder above it), the
 * cluster lives in a 0700 folder that user owns, named by a hash of `dir`; the user's folders
 * keep their permissions.
 */
export function postgresClusterDir(dir: string, owner = runAs()): string {
  const recorded = join(dir, LOCATION_FILE)
  if (existsSync(recorded)) return readFileSync(recorded, 'utf8').trim()
  if (!owner || reachable(dir, owner)) return dir
  const hash = createHash('sha256').update(realpathSync(dir)).digest('hex').slice(0, 12)
  const base = owner.home && existsSync(owner.home) ? join(owner.home, 'docflow') : '/var/tmp'
  return join(base, base === '/var/tmp' ? `docflow-pg-${hash}` : hash)
}

/** postmaster.pid of the cluster of `dir` (for stopping one a killed supervisor left running). */
export function postmasterPidFile(dir: string): string {
  const recorded = join(dir, LOCATION_FILE)
  const clusterDir = existsSync(recorded) ? readFileSync(recorded, 'utf8').trim() : dir
  return join(clusterDir, 'pgdata', 'postmaster.pid')
}

/** Creates the cluster on first use, starts it on `port`, and makes sure the database exists. */
export async function startPostgres(o: PostgresOptions): Promise<Postgres> {
  const bin = postgresBinDir()
  if (!bin) throw new Error('PostgreSQL server is not installed (apt-get install postgresql; npm start installs it)')
  const owner = runAs()
  const asOwner = owner ? { uid: owner.uid, gid: owner.gid } : {}
  mkdirSync(o.dir, { recursive: true })
  if (owner) chownSync(o.dir, owner.uid, owner.gid)
  const clusterDir = postgresClusterDir(o.dir, owner)
  if (clusterDir !== o.dir) {
    for (const folder of [dirname(clusterDir), clusterDir]) {
      if (existsSync(folder)) continue
      mkdirSync(folder, { mode: 0o700 })
      if (owner) chownSync(folder, owner.uid, owner.gid)
    }
    if (!existsSync(join(o.dir, LOCATION_FILE))) {
      // Not recorded, so the data folder is new: a cluster already there belonged to a data
      // folder that was deleted (a reset). Its checkpoints would not match the new streams.
      if (existsSync(join(clusterDir, 'pgdata'))) {
        const aside = `${clusterDir}-${new Date().toISOString().replace(/[:.]/g, '-')}`
        renameSync(join(clusterDir, 'pgdata'), aside)
        o.say?.(`moved the cluster of a deleted data folder aside to ${aside}`)
      }
      writeFileSync(join(o.dir, LOCATION_FILE), `${clusterDir}\n`)
    }
    o.say?.(`the postgres user cannot reach ${o.dir}; its cluster lives in ${clusterDir} (recorded in ${join(o.dir, LOCATION_FILE)})`)
  }
  const dataDir = join(clusterDir, 'pgdata')
  const log = join(o.dir, 'postgres.log')
  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    try {
      execFileSync(join(bin, 'initdb'), ['-D', dataDir, '-U', SUPERUSER, '-A', 'trust', '-E', 'UTF8', '--no-locale', ...(o.fsync === false ? ['-N'] : [])], { ...asOwner, cwd: clusterDir, stdio: 'pipe' })
    } catch (err) {
      throw new Error(`initdb failed in ${dataDir}: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`, { cause: err })
    }
  }
  // A postmaster left running by a killed supervisor still holds the data folder.
  stopStale(join(dataDir, 'postmaster.pid'), 'postgres', 'SIGINT')
  // shared_buffers 32 MB, not the default 128: the op log is appended once and read back rarely,
  // so its pages sat in shared buffers and in the OS page cache both (measured at 1,000 typing
  // clients: PostgreSQL's PSS 116 → 81 MB, its CPU unchanged).
  const args = ['-D', dataDir, '-p', String(o.port), '-k', clusterDir, '-h', '127.0.0.1', '-c', 'max_connections=200', '-c', 'shared_buffers=32MB']
  if (o.fsync === false) args.push('-c', 'fsync=off', '-c', 'full_page_writes=off')
  const child = spawnLogged(join(bin, 'postgres'), args, log, { ...asOwner, cwd: clusterDir, detached: o.ownProcessGroup === true })
  let died = false
  void exited(child).then(() => (died = true))
  const adminUrl = `postgres://${SUPERUSER}@127.0.0.1:${o.port}/postgres`
  // SIGINT is PostgreSQL's fast shutdown: roll back open transactions, checkpoint, exit.
  const stop = () => terminate(child, 'SIGINT', 30_000)
  try {
    await waitFor(`PostgreSQL on port ${o.port} (log: ${log})`, async () => {
      if (died) throw new GaveUp(`postgres exited: ${lastLines(log)}`)
      const c = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: CHECK_TIMEOUT_MS, query_timeout: CHECK_TIMEOUT_MS })
      await c.connect()
      try {
        // Another PostgreSQL on this port answers too (ours then fails to bind and exits, maybe
        // only after this connect): using it would mix two deployments' data and die with it.
        const serving = (await c.query<{ data_directory: string }>('SHOW data_directory')).rows[0]!.data_directory
        if (realpathSync(serving) !== realpathSync(dataDir)) throw new GaveUp(`port ${o.port} answers another PostgreSQL (data directory ${serving}): Address already in use`)
        const exists = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE])
        if (exists.rowCount === 0) await c.query(`CREATE DATABASE ${DATABASE}`)
      } finally {
        await c.end()
      }
      return true
    })
  } catch (err) {
    await stop()
    throw err
  }
  return {
    url: `postgres://${SUPERUSER}@127.0.0.1:${o.port}/${DATABASE}`,
    port: o.port,
    clusterDir,
    process: child,
    stop,
  }
}
