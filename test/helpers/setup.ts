import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { EDITS_STREAM, storedEditSubjects, type Claims } from '../../contracts/mod.ts'
import { Core, type CoreOptions } from '../../core/core.ts'
import { Edge, type EdgeOptions } from '../../edge/edge.ts'
import { mintToken } from '../../runtime/jwt.ts'
import { createLogger } from '../../runtime/log.ts'
import { createCoreMetrics } from '../../core/metrics.ts'
import { createEdgeMetrics } from '../../edge/metrics.ts'
import { createRegistry } from '../../runtime/metrics.ts'
import { startNatsServer, type NatsServer } from '../../scripts/lib/nats-server.ts'
import { startPostgres, type Postgres } from '../../scripts/lib/postgres.ts'
import { exited, freePort, waitFor } from '../../scripts/lib/proc.ts'

export const JWT_SECRET = 'test-secret-0123456789abcdef'
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const log = createLogger('test', process.env.TEST_LOG_LEVEL ?? 'silent')

/** A real nats-server and PostgreSQL on free ports in a temp dir, and what tests start on them. */
export interface Stack {
  dir: string
  nats: NatsServer
  pg: Postgres
  db: pg.Pool
  /** Starts an in-process core; stopped by cleanup(). */
  core(overrides?: Partial<CoreOptions>): Promise<RunningCore>
  /** Starts an in-process edge; stopped by cleanup(). */
  edge(overrides?: Partial<EdgeOptions>): Promise<RunningEdge>
  /** Starts core as its own process (for kill -9). */
  coreProcess(): Promise<CoreProcess>
  /** A NATS connection for the test itself. */
  connect(): Promise<NatsConnection>
  cleanup(): Promise<void>
}

export interface RunningCore {
  core: Core
  url: string
  stop(): Promise<void>
}
export interface RunningEdge {
  edge: Edge
  url: string
  stop(): Promise<void>
}
export interface CoreProcess {
  url: string
  child: ChildProcess
  kill9(): Promise<void>
}

export async function setup(): Promise<Stack> {
  const dir = mkdtempSync(join(tmpdir(), 'docflow-test-'))
  chmodSync(dir, 0o755) // PostgreSQL runs as another user when tests run as root
  const [natsPort, monitorPort, pgPort] = [await freePort(), await freePort(), await freePort()]
  const nats = await startNatsServer({ dir: join(dir, 'nats'), port: natsPort, monitorPort, maxFileStore: '1GB' })
  const pgServer = await startPostgres({ dir: join(dir, 'pg'), port: pgPort, fsync: false })
  const db = new pg.Pool({ connectionString: pgServer.url, max: 4 })
  const stoppers: (() => Promise<void>)[] = []
  const coreEnv = () => ({ databaseUrl: pgServer.url, jwtSecret: JWT_SECRET, stream: EDITS_STREAM, streamSubjects: [storedEditSubjects('*')] })

  const stack: Stack = {
    dir,
    nats,
    pg: pgServer,
    db,
    async connect() {
      const nc = await connect({ servers: nats.url })
      stoppers.push(() => nc.close())
      return nc
    },
    async core(overrides = {}) {
      const nc = await connect({ servers: nats.url, noEcho: true })
      const core = new Core(
        { port: 0, host: '127.0.0.1', maxBatch: 512, maxDocs: 100, ackWaitMs: 30_000, maxAckPending: 1_024, leaseRetryMs: 200, retryDelayMs: 200, ...coreEnv(), ...overrides },
        nc,
        log,
        createCoreMetrics(createRegistry('core', false)),
      )
      const port = await core.start()
      let stopped = false
      const stop = async () => {
        if (stopped) return
        stopped = true
        await core.stop()
        await nc.close()
      }
      stoppers.push(stop)
      return { core, url: `http://127.0.0.1:${port}`, stop }
    },
    async edge(overrides = {}) {
      const nc = await connect({ servers: nats.url, noEcho: true })
      const edge = new Edge(
        { port: 0, host: '127.0.0.1', edgeId: `edge-test-${Math.random().toString(36).slice(2, 8)}`, jwtSecret: JWT_SECRET, maxMessageBytes: 16 * 1024 * 1024, stateTimeoutMs: 2_000, resyncDelayMs: 500, publishAckTimeoutMs: 2_000, publishAttempts: 3, ...overrides },
        nc,
        log,
        createEdgeMetrics(createRegistry('edge', false)),
      )
      const port = await edge.start()
      let stopped = false
      const stop = async () => {
        if (stopped) return
        stopped = true
        await edge.stop()
        await nc.close()
      }
      stoppers.push(stop)
      return { edge, url: `ws://127.0.0.1:${port}`, stop }
    },
    async coreProcess() {
      const port = await freePort()
      const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'core/main.ts')], {
        cwd: ROOT,
        env: { ...process.env, CORE_PORT: String(port), CORE_HOST: '127.0.0.1', NATS_URL: nats.url, DATABASE_URL: pgServer.url, DOCFLOW_JWT_SECRET: JWT_SECRET, CORE_LEASE_RETRY_MS: '200', CORE_RETRY_DELAY_MS: '200', LOG_LEVEL: 'warn' },
        stdio: ['ignore', 'inherit', 'inherit'],
      })
      const url = `http://127.0.0.1:${port}`
      stoppers.push(async () => {
        child.kill('SIGKILL')
        await exited(child)
      })
      await waitFor('core process health', async () => (await fetch(`${url}/healthz`)).ok, 30_000)
      return {
        url,
        child,
        async kill9() {
          child.kill('SIGKILL')
          await exited(child)
        },
      }
    },
    async cleanup() {
      for (const stop of stoppers.reverse()) await stop()
      await db.end()
      await pgServer.stop()
      await nats.stop()
      rmSync(dir, { recursive: true, force: true })
    },
  }
  return stack
}

/** A signed token for tests; `exp` in seconds from now (negative: already expired). */
export function token(claims: Partial<Omit<Claims, 'exp'>> & { tenant: string }, ttlSeconds = 3_600, secret = JWT_SECRET): Promise<string> {
  return mintToken({ sub: 'user-1', docs: ['*'], role: 'editor', ...claims }, secret, ttlSeconds)
}
