import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { AGG_STREAM, ServiceUser, serviceInboxPrefix, tenantUser, type Claims } from '../../contracts/mod.ts'
import { Core, type CoreOptions } from '../../core/core.ts'
import { Edge } from '../../edge/edge.ts'
import type { EdgeOptions } from '../../edge/options.ts'
import { FsBlobStore } from '../../runtime/blobs/fs-store.ts'
import { mintToken } from '../../runtime/jwt.ts'
import { createLogger } from '../../runtime/log.ts'
import { connectNats } from '../../runtime/nats.ts'
import { createCoreMetrics } from '../../core/metrics.ts'
import { createEdgeMetrics } from '../../edge/metrics.ts'
import { createRegistry } from '../../runtime/metrics.ts'
import { natsFiles, startNatsServer, type NatsServer } from '../../scripts/lib/nats-server.ts'
import { startPostgres, type Postgres } from '../../scripts/lib/postgres.ts'
import { exited, freePort, freePorts, onFreePorts, probe, readStat, terminate, waitFor } from '../../scripts/lib/proc.ts'
import { Provisioner } from '../../scripts/lib/provisioner.ts'
import { Registry } from '../../scripts/lib/registry.ts'

export const JWT_SECRET = 'test-secret-0123456789abcdef-0123456789'
/** Every test client connects from 127.0.0.1: the per-IP connect throttle is off unless a test sets it; the other limits keep their defaults. */
export const LOOPBACK_LIMITS = { ipConnectsPerS: 0 }
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
/** The stacks' last log lines, printed as TAP comments when tap times the file out (so a hang says where it was); on stderr too with TEST_LOG_LEVEL. */
const recent: string[] = []
const log = createLogger('test', process.env.TEST_LOG_LEVEL ?? 'info', {
  write(line: string) {
    recent.push(line.trimEnd())
    if (recent.length > 60) recent.shift()
    if (process.env.TEST_LOG_LEVEL) process.stderr.write(line)
  },
})
process.once('SIGALRM', () => process.stdout.write(`# the test stack's last log lines before the timeout:\n${recent.map((l) => `#   ${l}\n`).join('')}`))
const SERVICE_MAX_FILE_BYTES = 512 * 1024 ** 2

export interface SetupOptions {
  /** Tenants provisioned before the test starts, with their storage quota. Default acme and globex, 64 MiB each. */
  tenants?: Record<string, number>
}

/** A real nats-server (generated tenant accounts) and PostgreSQL on free ports in a temp dir. */
export interface Stack {
  dir: string
  nats: NatsServer
  pg: Postgres
  db: pg.Pool
  /** Edit partitions this stack was provisioned with (its registry's; edges and cores get it). */
  partitions: number
  /** Provisioning as `npm run tenant` does it, against this stack. */
  provisioner: Provisioner
  /** Credentials of a service-account user or of a tenant's user. */
  credentials(who: ServiceUser | { tenant: string; kind: 'admin' | 'app' }): { user: string; pass: string }
  /** Starts an in-process core; stopped by cleanup(). */
  core(overrides?: Partial<CoreOptions>): Promise<RunningCore>
  /** Starts an in-process edge; stopped by cleanup(). */
  edge(overrides?: Partial<EdgeOptions>): Promise<RunningEdge>
  /** Starts edge or core as its own process (for kill -9). */
  process(service: 'edge' | 'core', port?: number): Promise<ServiceProcess>
  /** Stops nats-server with `signal` (SIGKILL: a crash) and starts it again on the same store and port. */
  restartNats(signal: NodeJS.Signals): Promise<void>
  /** Freezes nats-server (SIGSTOP) and waits until it is stopped; returns the resume (SIGCONT, once), also run at teardown by the caller. */
  pauseNats(): Promise<() => void>
  /** Stops PostgreSQL with `signal` and starts it again on the same cluster and port. */
  restartPostgres(signal: NodeJS.Signals): Promise<void>
  /** A NATS connection for the test itself; the service `edge` user unless told otherwise. */
  connect(who?: ServiceUser | { tenant: string; kind: 'admin' | 'app' }): Promise<NatsConnection>
  cleanup(): Promise<void>
}

export interface RunningCore {
  core: Core
  url: string
  /** The core's private ops port (/metrics, /healthz). */
  opsUrl: string
  stop(): Promise<void>
}
export interface RunningEdge {
  edge: Edge
  url: string
  /** The edge's private ops port (/metrics, /healthz). */
  opsUrl: string
  stop(): Promise<void>
}
export interface ServiceProcess {
  url: string
  /** An edge process's private ops port (/metrics, /healthz). */
  opsUrl?: string
  child: ChildProcess
  kill9(): Promise<void>
}

export async function setup(o: SetupOptions = {}): Promise<Stack> {
  const dir = mkdtempSync(join(tmpdir(), 'docflow-test-'))
  chmodSync(dir, 0o755) // PostgreSQL runs as another user when tests run as root
  let pgPort = await freePort()
  const natsDir = join(dir, 'nats')
  const [natsPort, monitorPort] = await freePorts(2)
  const natsOptions = { dir: natsDir, port: natsPort!, monitorPort: monitorPort!, maxFileStore: '8GB', serviceMaxFileBytes: SERVICE_MAX_FILE_BYTES }
  const registryPath = natsFiles(natsDir).registry
  // Tenants known before the server starts are in its first config: no reload needed.
  mkdirSync(natsDir, { recursive: true })
  const registry = Registry.open(registryPath)
  for (const [tenant, bytes] of Object.entries(o.tenants ?? { acme: 64 * 1024 ** 2, globex: 64 * 1024 ** 2 })) registry.addTenant(tenant, bytes)
  registry.save()
  log.info({ dir, natsPort: natsOptions.port, monitorPort: natsOptions.monitorPort, pgPort }, 'starting the test stack')
  // A free port can be taken by another suite between picking it and binding it: pick again.
  const repick = (pick: () => Promise<unknown>) => async (err: Error) => {
    log.info({ err: err.message }, 'port taken; picking another')
    await pick()
  }
  const nats = await onFreePorts(
    () => startNatsServer(natsOptions),
    /address already in use/i,
    repick(async () => {
      const [port, monitorPort] = await freePorts(2)
      Object.assign(natsOptions, { port: port!, monitorPort: monitorPort! })
    }),
  )
  const pgServer = await onFreePorts(
    () => startPostgres({ dir: join(dir, 'pg'), port: pgPort, fsync: false }),
    /address already in use/i,
    repick(async () => (pgPort = await freePort())),
  )
  const db = new pg.Pool({ connectionString: pgServer.url, max: 4 })
  db.on('error', (err) => log.debug({ err }, 'test pool connection lost (database restarted)'))
  const provisioner = await Provisioner.open({ natsDir, natsUrl: nats.url, databaseUrl: pgServer.url })
  await provisioner.init()
  log.info({ natsPort: nats.port, pgPort }, 'test stack up')
  const stoppers: (() => Promise<void>)[] = []
  // If the test process dies without cleanup, take the servers with it: on exit, and on the
  // SIGALRM tap sends at a timeout before its SIGKILL (which runs no 'exit' handler).
  const killServers = () => {
    stack.nats.process.kill('SIGKILL')
    stack.pg.process.kill('SIGKILL')
  }
  process.once('exit', killServers)
  process.once('SIGALRM', killServers)
  const credentials: Stack['credentials'] = (who) => {
    const registry = Registry.open(registryPath)
    if (typeof who === 'string') return { user: who, pass: registry.servicePassword(who) }
    const entry = registry.tenant(who.tenant)
    if (!entry) throw new Error(`no tenant ${who.tenant} in this stack`)
    return { user: tenantUser(who.tenant, who.kind), pass: entry.passwords[who.kind] }
  }
  /** Registers a stop for cleanup(); calling it earlier stops once. */
  const track = (stop: () => Promise<void>) => {
    let done: Promise<void> | null = null
    const once = () => (done ??= stop())
    stoppers.push(once)
    return once
  }
  const serviceNats = async (user: ServiceUser, name: string) => {
    const c = credentials(user)
    return connectNats({ servers: stack.nats.url, user: c.user, pass: c.pass, name, inboxPrefix: serviceInboxPrefix(user) }, log)
  }

  const stack: Stack = {
    dir,
    nats,
    pg: pgServer,
    db,
    partitions: registry.editPartitions,
    provisioner,
    credentials,
    async connect(who = ServiceUser.Edge) {
      const nc = await connect({ servers: stack.nats.url, ...credentials(who), ...(typeof who === 'string' ? { inboxPrefix: serviceInboxPrefix(who) } : {}) })
      stoppers.push(() => nc.close())
      return nc
    },
    async core(overrides = {}) {
      const nc = await serviceNats(ServiceUser.Core, 'core-test')
      const blobs = await FsBlobStore.open(join(dir, 'blobs'))
      const core = new Core(
        { blobs, port: 0, host: '127.0.0.1', opsPort: 0, opsHost: '127.0.0.1', databaseUrl: stack.pg.url, tokens: { secret: JWT_SECRET }, stream: AGG_STREAM, editPartitions: stack.partitions, maxBatch: 512, maxDocs: 100, compactEveryOps: 256, ackWaitMs: 30_000, maxAckPending: 1_024, leaseRetryMs: 200, retryDelayMs: 200, monitorIntervalMs: 200, ...overrides },
        nc,
        log,
        createCoreMetrics(createRegistry('core', false)),
      )
      const port = await core.start().catch(async (err: unknown) => {
        await core.stop()
        await nc.close()
        throw err
      })
      const stop = track(async () => {
        await core.stop()
        await nc.close()
      })
      return { core, url: `http://127.0.0.1:${port}`, opsUrl: `http://127.0.0.1:${core.opsPort}`, stop }
    },
    async edge(overrides = {}) {
      const nc = await serviceNats(ServiceUser.Edge, 'edge-test')
      const edge = new Edge(
        { port: 0, host: '127.0.0.1', editPartitions: stack.partitions, edgeId: `edge-test-${Math.random().toString(36).slice(2, 8)}`, tokens: { secret: JWT_SECRET }, opsPort: 0, stateTimeoutMs: 2_000, resyncDelayMs: 500, publishAckTimeoutMs: 2_000, publishAttempts: 3, autoProvisionTenants: false, limits: LOOPBACK_LIMITS, ...overrides },
        nc,
        log,
        createEdgeMetrics(createRegistry('edge', false)),
      )
      const port = await edge.start()
      const stop = track(async () => {
        await edge.stop()
        await nc.close()
      })
      return { edge, url: `ws://127.0.0.1:${port}`, opsUrl: `http://127.0.0.1:${edge.opsPort}`, stop }
    },
    async process(service, fixedPort) {
      const free = await freePorts(3)
      const [port, opsPort] = fixedPort === undefined ? free : [fixedPort, free.find((p) => p !== fixedPort)!]
      const user = service === 'core' ? ServiceUser.Core : ServiceUser.Edge
      const { pass } = credentials(user)
      const env: NodeJS.ProcessEnv = { ...process.env, NATS_URL: stack.nats.url, DATABASE_URL: stack.pg.url, DOCFLOW_JWT_SECRET: JWT_SECRET, DOCFLOW_EDIT_PARTITIONS: String(stack.partitions), LOG_LEVEL: 'warn' }
      if (service === 'core') Object.assign(env, { DOCFLOW_BLOB_DIR: join(dir, 'blobs'), CORE_PORT: String(port), CORE_HOST: '127.0.0.1', CORE_NATS_USER: user, CORE_NATS_PASS: pass, CORE_LEASE_RETRY_MS: '200', CORE_RETRY_DELAY_MS: '200', CORE_OPS_PORT: String(opsPort) })
      if (service === 'edge') Object.assign(env, { EDGE_PORT: String(port), EDGE_HOST: '127.0.0.1', EDGE_OPS_PORT: String(opsPort), EDGE_NATS_USER: user, EDGE_NATS_PASS: pass, EDGE_RESYNC_DELAY_MS: '500', EDGE_LIMIT_IP_CONNECTS_PER_S: '0' })
      const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, service, 'main.ts')], { cwd: ROOT, env, stdio: ['ignore', 'inherit', 'inherit'] })
      const kill9 = async () => {
        child.kill('SIGKILL')
        await exited(child)
      }
      stoppers.push(kill9)
      await waitFor(`${service} process health`, async () => (await probe(`http://127.0.0.1:${port}/healthz`)).ok, 30_000)
      return { url: `${service === 'core' ? 'http' : 'ws'}://127.0.0.1:${port}`, ...(service === 'edge' ? { opsUrl: `http://127.0.0.1:${opsPort}` } : {}), child, kill9 }
    },
    async restartNats(signal) {
      await terminate(stack.nats.process, signal)
      stack.nats = await startNatsServer(natsOptions)
    },
    async pauseNats() {
      const pid = stack.nats.process.pid!
      process.kill(pid, 'SIGSTOP')
      // kill() returns before every thread has stopped: until then nats-server may still take
      // (and ack) what the test sends next.
      await waitFor('every nats-server thread stopped', async () => readdirSync(`/proc/${pid}/task`).every((task) => readStat(pid, Number(task))?.state === 'T'), 5_000, 5).catch((err: unknown) => {
        process.kill(pid, 'SIGCONT')
        throw err
      })
      let paused = true
      return () => {
        if (paused) process.kill(pid, 'SIGCONT')
        paused = false
      }
    },
    async restartPostgres(signal) {
      await terminate(stack.pg.process, signal)
      stack.pg = await startPostgres({ dir: join(dir, 'pg'), port: pgPort, fsync: false })
    },
    async cleanup() {
      for (const stop of stoppers.reverse()) await stop()
      await provisioner.close().catch((err: unknown) => log.debug({ err }, 'provisioner connection already closed'))
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
