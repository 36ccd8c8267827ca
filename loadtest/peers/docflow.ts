// DocFlow as `npm start` runs it: scripts/start.ts (the supervisor) with its data in a temp dir
// and every port free. Server processes = the supervisor and its descendants plus the
// PostgreSQL postmaster and its children (found by the cluster's postmaster.pid, wherever the
// cluster lives). Stop = SIGTERM to the supervisor, which drains and stops everything.
// With `edges` > 1, npm start runs that many edges (EDGE_PROCESSES), each on its own public
// port (EDGE_PORT_PER_PROCESS: EDGE_PORT - i, ops port EDGE_OPS_PORT - i), so the driver can put
// a document's two clients on different edges instead of leaving it to the kernel's SO_REUSEPORT
// hash.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, openSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import * as Y from 'yjs'
import { DEV_JWT_SECRET } from '../../runtime/config.ts'
import { mintToken } from '../../runtime/jwt.ts'
import { postmasterPidFile } from '../../scripts/lib/postgres.ts'
import { natsFiles } from '../../scripts/lib/nats-server.ts'
import { Registry } from '../../scripts/lib/registry.ts'
import { ServiceUser } from '../../contracts/mod.ts'
import { lastLines, onFreePorts } from '../../scripts/lib/proc.ts'
import { bundleSupervisor } from '../../scripts/lib/supervisor-bundle.mjs'
import type { EdgeEndpoint } from '../edge-stats.ts'
import { allStats, descendants } from '../proc-stats.ts'
import type { EditSample, LatencySummary, RunningSystem, StartOptions } from '../systems.ts'
import { freePortBlocks, persistedFrom, sampleKey, stopTree, storedTimes, tempDir, waitHealthy } from './common.ts'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
/** A dev tenant of scripts/start.ts (1 GiB quota). */
export const DOCFLOW_TENANT = 'acme'
const START_TIMEOUT_MS = 180_000
/** How long persistedLatency waits for the op log to hold every sample. */
const PERSIST_WAIT_MS = 30_000
/** Above the most sockets any scenario opens from the driver's one address and user (idle: 15,000). */
const BENCH_CONNECTIONS = 20_000

/**
 * Starts DocFlow; when a port picked free was taken before its part bound it (other suites
 * pick ports too, and the parts bind seconds later, after the build), starts again on new
 * ports, three tries.
 */
export function startDocFlow(options: StartOptions): Promise<RunningSystem> {
  return onFreePorts(() => startDocFlowOnce(options), /could not listen|address already in use|EADDRINUSE|is taken by another program/i, () => options.say?.('a port was taken meanwhile; starting DocFlow again on new ports'))
}

async function startDocFlowOnce(options: StartOptions): Promise<RunningSystem> {
  const edges = options.edges ?? 1
  const dataDir = tempDir('docflow')
  const [edgePort, corePort, natsPort, natsMonitorPort, pgPort, edgeOpsPort, coreOpsPort] = (await freePortBlocks([edges, 1, 1, 1, 1, edges, 1])) as [number, number, number, number, number, number, number]
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    DOCFLOW_DATA_DIR: dataDir,
    EDGE_PORT: String(edgePort),
    CORE_PORT: String(corePort),
    NATS_PORT: String(natsPort),
    NATS_MONITOR_PORT: String(natsMonitorPort),
    PG_PORT: String(pgPort),
    EDGE_OPS_PORT: String(edgeOpsPort),
    CORE_OPS_PORT: String(coreOpsPort),
    EDGE_PROCESSES: String(edges),
    EDGE_PORT_PER_PROCESS: String(edges > 1),
    // The driver is one IP address and one user (the bench token) opening up to 10,000 sockets
    // at once: lift the edge's per-IP and per-user connection limits (edge/limits.ts), which
    // exist against one abuser, not many editors. Update rates and sizes keep their defaults.
    EDGE_LIMIT_IP_CONNECT_BURST: String(BENCH_CONNECTIONS),
    EDGE_LIMIT_IP_PENDING_ADMISSIONS: String(BENCH_CONNECTIONS),
    EDGE_LIMIT_USER_CONNECTIONS: String(BENCH_CONNECTIONS),
  }
  // The dev token defaults: no issuer/audience, the dev secret; its own PostgreSQL.
  for (const v of ['DOCFLOW_JWT_SECRET', 'DOCFLOW_JWT_ISSUER', 'DOCFLOW_JWT_AUDIENCE', 'DATABASE_URL', 'NODE_ENV']) delete env[v]
  const log = join(dataDir, 'supervisor.log')
  options.say?.(`starting DocFlow (scripts/start.ts) in ${dataDir}`)
  // As npm start runs it: bundled, without the tsx loader.
  const supervisor = spawn(process.execPath, [await bundleSupervisor(ROOT)], { cwd: ROOT, env, detached: true, stdio: ['ignore', openSync(log, 'a'), openSync(log, 'a')] })
  const pgDir = join(dataDir, 'pg')
  const postmaster = (): number[] => {
    try {
      const pid = Number(readFileSync(postmasterPidFile(pgDir), 'utf8').split('\n')[0])
      return pid > 0 ? [pid] : []
    } catch {
      return [] // not started yet, or stopped
    }
  }
  const clusterDir = () => {
    const recorded = join(pgDir, 'cluster-location')
    return existsSync(recorded) ? readFileSync(recorded, 'utf8').trim() : undefined
  }
  const serverPids = () => {
    const stats = allStats()
    return [...new Set([...(supervisor.pid ? descendants([supervisor.pid], stats) : []), ...descendants(postmaster(), stats)])]
  }
  let db: pg.Pool | undefined
  const stop = async () => {
    await db?.end()
    const cluster = clusterDir()
    await stopTree(supervisor, 'SIGTERM', 60_000, () => descendants(postmaster()))
    rmSync(dataDir, { recursive: true, force: true })
    if (cluster) rmSync(cluster, { recursive: true, force: true })
  }
  try {
    const hint = `log: ${log}`
    await waitHealthy(`http://127.0.0.1:${edgePort}/healthz`, supervisor, START_TIMEOUT_MS, hint)
    await waitHealthy(`http://127.0.0.1:${corePort}/healthz`, supervisor, START_TIMEOUT_MS, hint)
    // npm start writes its endpoints once every part is up, a moment after the last health check passes.
    const deadline = Date.now() + START_TIMEOUT_MS
    while (!existsSync(join(dataDir, 'endpoints.json'))) {
      if (Date.now() > deadline || supervisor.exitCode !== null) throw new Error(`no endpoints.json in ${dataDir}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  } catch (err) {
    const tail = existsSync(log) ? lastLines(log, 10) : ''
    await stop()
    throw new Error(`DocFlow did not start: ${(err as Error).message}\n${tail}`, { cause: err })
  }
  const endpoints = JSON.parse(readFileSync(join(dataDir, 'endpoints.json'), 'utf8')) as { databaseUrl: string; nats: string; core: string }
  db = new pg.Pool({ connectionString: endpoints.databaseUrl, max: 2 })
  const token = await mintToken({ sub: 'bench', tenant: DOCFLOW_TENANT, docs: ['*'], role: 'editor' }, DEV_JWT_SECRET, 24 * 3_600)
  const pool = db
  const registry = Registry.open(natsFiles(join(dataDir, 'nats')).registry)
  /** Edge i (from 0) as npm start names and places it (scripts/start.ts: edgeName, edgePublicPort, edgeOpsPort). */
  const edgeEndpoints: EdgeEndpoint[] = Array.from({ length: edges }, (_, i) => ({
    wsUrl: `ws://127.0.0.1:${edgePort - i}`,
    metricsUrl: `http://127.0.0.1:${edgeOpsPort - i}/metrics`,
    pid: () => {
      try {
        return Number(readFileSync(join(dataDir, 'run', i === 0 ? 'edge.pid' : `edge-${i + 1}.pid`), 'utf8').trim()) || undefined
      } catch {
        return undefined // between restarts, or stopped
      }
    },
  }))
  return {
    name: 'DocFlow',
    label: edges > 1 ? `DocFlow (${edges} edges)` : 'DocFlow',
    ...(edges > 1 ? { edges: edgeEndpoints } : {}),
    client: 'y-websocket',
    wsUrl: `ws://127.0.0.1:${edgePort}`,
    params: () => ({ token }),
    serverPids,
    logsDir: join(dataDir, 'logs'),
    stop,
    docflow: {
      tenant: DOCFLOW_TENANT,
      token,
      natsUrl: endpoints.nats,
      edgeNatsUser: ServiceUser.Edge,
      edgeNatsPass: registry.servicePassword(ServiceUser.Edge),
      editPartitions: registry.editPartitions,
      coreUrl: endpoints.core,
      coreMetricsUrl: `http://127.0.0.1:${coreOpsPort}/metrics`,
      edgeMetricsUrl: `http://127.0.0.1:${edgeOpsPort}/metrics`,
      db: pool,
      restartCore: () => restartCore(join(dataDir, 'run', 'core.pid'), `http://127.0.0.1:${corePort}/healthz`, supervisor),
    },
    persistedLatency: async (samples: EditSample[]) => {
      const docs = [...new Set(samples.map((s) => s.docId))]
      const deadline = Date.now() + PERSIST_WAIT_MS
      for (;;) {
        const rows = await pool.query<{ doc_id: string; update: Buffer; t: number }>(
          `SELECT doc_id, update, extract(epoch FROM committed_at) * 1000 AS t FROM op_log WHERE tenant = $1 AND doc_id = ANY($2)`,
          [DOCFLOW_TENANT, docs],
        )
        const at = storedTimes(rows.rows.map((r) => ({ docId: r.doc_id, storedWallMs: Number(r.t), update: r.update })), new Set(docs))
        const result = persistedFrom(samples, (s) => at.get(sampleKey(s)))
        if (result.missing === 0 || Date.now() > deadline) return result
        await new Promise((r) => setTimeout(r, 500))
      }
    },
    storedUpTo: async (docId: string, client: number, clock: number) => {
      const deadline = Date.now() + PERSIST_WAIT_MS
      for (;;) {
        const rows = await pool.query<{ update: Buffer }>(`SELECT update FROM op_log WHERE tenant = $1 AND doc_id = $2`, [DOCFLOW_TENANT, docId])
        const held = rows.rows.reduce((n, r) => Math.max(n, Y.parseUpdateMeta(r.update).to.get(client) ?? 0), 0)
        if (held > clock) return true
        if (Date.now() > deadline) return false
        await new Promise((r) => setTimeout(r, 500))
      }
    },
    ingestToCommitted: async (fromWallMs: number, toWallMs: number): Promise<LatencySummary> => {
      const r = await pool.query<{ n: string; p50: number | null; p95: number | null }>(
        `SELECT count(*) AS n,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM committed_at - ingest_ts) * 1000) AS p50,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM committed_at - ingest_ts) * 1000) AS p95
           FROM op_log WHERE tenant = $1 AND ingest_ts BETWEEN to_timestamp($2 / 1000.0) AND to_timestamp($3 / 1000.0)`,
        [DOCFLOW_TENANT, fromWallMs, toWallMs],
      )
      const row = r.rows[0]!
      return { n: Number(row.n), p50Ms: Number(row.p50 ?? NaN), p95Ms: Number(row.p95 ?? NaN) }
    },
  }
}

/** SIGTERMs the core process npm start runs and waits until its supervisor brought a new one up and it answers. */
async function restartCore(pidFile: string, healthUrl: string, supervisor: ChildProcess): Promise<void> {
  const pidNow = () => Number(readFileSync(pidFile, 'utf8').trim())
  const old = pidNow()
  process.kill(old, 'SIGTERM')
  const deadline = Date.now() + START_TIMEOUT_MS
  for (;;) {
    if (supervisor.exitCode !== null) throw new Error('npm start exited while core restarted')
    if (Date.now() > deadline) throw new Error(`core did not come back within ${START_TIMEOUT_MS} ms (pid file ${pidFile})`)
    let pid = 0
    try {
      pid = pidNow()
    } catch {
      // between the old instance and the new one
    }
    if (pid > 0 && pid !== old && (await fetch(healthUrl).then((r) => r.ok, () => false))) return
    await new Promise((r) => setTimeout(r, 200))
  }
}
