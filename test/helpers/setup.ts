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
import { connectNats } from '../../runtime/nats.ts'
import { createCoreMetrics } from '../../core/metrics.ts'
import { createEdgeMetrics } from '../../edge/metrics.ts'
import { createRegistry } from '../../runtime/metrics.ts'
import { startNatsServer, type NatsServer } from '../../scripts/lib/nats-server.ts'
import { startPostgres, type Postgres } from '../../scripts/lib/postgres.ts'
import { exited, freePort, terminate, waitFor } from '../../scripts/lib/proc.ts'

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
  /** Starts edge or core as its own process (for kill -9). */
  process(service: 'edge' | 'core', port?: number): Promise<ServiceProcess>
  /** Stops nats-server with `signal` (SIGKILL: a crash) and starts it again on the same store and port. */
  restartNats(signal: NodeJS.Signals): Promise<void>
  /** Stops PostgreSQL with `signal` and starts it again on the same cluster and port. */
  restartPostgres(signal: NodeJS.Signals): Promise<void>
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
export interface ServiceProcess {
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
  db.on('error', (err) => log.debug({ err }, 'test pool connection lost (database restarted)'))
  const stoppers: (() => Promise<void>)[] = []
  // If the test process dies without cleanup (a timeout), take the servers with it.
  process.once('exit', () => {
    stack.nats.process.kill('SIGKILL')
    stack.pg.process.kill('SIGKILL')
  })
  const coreEnv = () => ({ databaseUrl: stack.pg.url, jwtSecret: JWT_SECRET, stream: EDITS_STREAM, streamSubjects: [storedEditSubjects('*')] })

  const stack: Stack = {
    dir,
    nats,
    pg: pgServer,
    db,
    async connect() {
      const nc = await connect({ servers: stack.nats.url })
      stoppers.push(() => nc.close())
      return nc
    },
    async core(overrides = {}) {
      const nc = await connectNats({ servers: stack.nats.url, name: 'core-test' }, log)
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
      const nc = await connectNats({ servers: stack.nats.url, name: 'edge-test' }, log)
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
    async process(service, fixedPort) {
      const port = fixedPort ?? (await freePort())
      const env: NodeJS.ProcessEnv = { ...process.env, NATS_URL: stack.nats.url, DATABASE_URL: stack.pg.url, DOCFLOW_JWT_SECRET: JWT_SECRET, LOG_LEVEL: 'warn' }
      if (service === 'core') Object.assign(env, { CORE_PORT: String(port), CORE_HOST: '127.0.0.1', CORE_LEASE_RETRY_MS: '200', CORE_RETRY_DELAY_MS: '200' })
      else Object.assign(env, { EDGE_PORT: String(port), EDGE_HOST: '127.0.0.1', EDGE_RESYNC_DELAY_MS: '500' })
      const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, service, 'main.ts')], { cwd: ROOT, env, stdio: ['ignore', 'inherit', 'inherit'] })
      const kill9 = async () => {
        child.kill('SIGKILL')
        await exited(child)
      }
      stoppers.push(kill9)
      await waitFor(`${service} process health`, async () => (await fetch(`http://127.0.0.1:${port}/healthz`)).ok, 30_000)
      return { url: `${service === 'core' ? 'http' : 'ws'}://127.0.0.1:${port}`, child, kill9 }
    },
    async restartNats(signal) {
      await terminate(stack.nats.process, signal)
      stack.nats = await startNatsServer({ dir: join(dir, 'nats'), port: natsPort, monitorPort, maxFileStore: '1GB' })
    },
    async restartPostgres(signal) {
      await terminate(stack.pg.process, signal)
      stack.pg = await startPostgres({ dir: join(dir, 'pg'), port: pgPort, fsync: false })
    },
    async cleanup() {
      for (const stop of stoppers.reverse()) await stop()
      await db.end()
      await stack.pg.stop()
      await stack.nats.stop()
      rmSync(dir, { recursive: true, force: true })
    },
  }
  return stack
}

/** A signed token for tests; `exp` in seconds from now (negative: already expired). */
export function token(claims: Partial<Omit<Claims, 'exp'>> & { tenant: string }, ttlSeconds = 3_600, secret = JWT_SECRET): Promise<string> {
  return mintToken({ sub: 'user-1', docs: ['*'], role: 'editor', ...claims }, secret, ttlSeconds)
}
