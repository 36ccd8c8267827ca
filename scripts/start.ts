// `npm start`: the whole pipeline on this machine — nats-server with JetStream, PostgreSQL
// (unless DATABASE_URL is set), core and edge — with its data under data/. Every part it
// started is brought back when it dies (backoff, same port and data). SIGTERM or Ctrl-C
// drains and stops everything it started.
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { z } from 'zod'
import { BLOB_STORE_VARS, EditPartitionCount, Port, PositiveInt, loadConfigOrExit } from '../runtime/config.ts'
import { blobDirOf } from '../runtime/blobs/blob-store.ts'
import { EDIT_PARTITIONS_VAR, ServiceUser } from '../contracts/mod.ts'
import { natsFiles, startNatsServer } from './lib/nats-server.ts'
import { Provisioner } from './lib/provisioner.ts'
import { Registry } from './lib/registry.ts'
import { startPostgres } from './lib/postgres.ts'
import { claimPidFile, portFree } from './lib/single-instance.ts'
import { alreadyRunning, supervisorPidFile } from './lib/supervisor-pid.mjs'
import { dataDirOf } from './lib/data-dir.mjs'
import { stopLeftovers } from './lib/leftovers.ts'
import { Supervised, nodeProcess, type Running } from './lib/service.ts'
import { buildServers } from './lib/build.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
/** Tenants every dev stack has; others are added on first sight (dev only) or with `npm run tenant`. */
const DEV_TENANTS = ['acme', 'globex']
const DEV_TENANT_QUOTA_BYTES = 1024 ** 3
/** Tenants added on first sight get less: AGG mirrors every quota within the service account's (10 GiB here). */
const DEV_AUTO_TENANT_QUOTA_BYTES = 256 * 1024 ** 2
/** Most edge processes npm start runs (EDGE_PROCESSES); one machine gains nothing past its cores. */
const MAX_EDGE_PROCESSES = 16
/** Most core processes npm start runs (CORE_PROCESSES); they share the partitions (core/balance.ts). */
const MAX_CORE_PROCESSES = 16
/** The highest TCP port. */
const MAX_PORT = 65_535

const config = loadConfigOrExit(
  z.object({
    edgePort: Port.default(8080),
    corePort: Port.default(8081),
    natsPort: Port.default(4222),
    natsMonitorPort: Port.default(8222),
    pgPort: Port.default(55432),
    edgeOpsPort: Port.default(9080),
    coreOpsPort: Port.default(9081),
    databaseUrl: z.string().optional(),
    /** Extra node flags for edge and core, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` (NODE_OPTIONS refuses --cpu-prof). */
    nodeArgs: z.string().default(''),
    /** Only for a new data folder: an existing one keeps the count it was provisioned with. */
    editPartitions: EditPartitionCount.optional(),
    /** Edge processes sharing EDGE_PORT (SO_REUSEPORT: the kernel spreads connections); the i-th (from 0) has ops port EDGE_OPS_PORT - i. */
    edgeProcesses: PositiveInt.max(MAX_EDGE_PROCESSES).default(1),
    /** Each edge its own public port, EDGE_PORT - i like the ops ports, instead of all sharing EDGE_PORT (the load test places a document's clients on different edges). Default false. */
    edgePortPerProcess: z.enum(['true', 'false']).default('false').transform((v) => v === 'true'),
    /** Core processes sharing the partitions; the i-th (from 0) serves the read API on CORE_PORT + i and its ops on CORE_OPS_PORT + i. */
    coreProcesses: PositiveInt.max(MAX_CORE_PROCESSES).default(1),
  }),
  {
    edgePort: 'EDGE_PORT',
    corePort: 'CORE_PORT',
    natsPort: 'NATS_PORT',
    natsMonitorPort: 'NATS_MONITOR_PORT',
    pgPort: 'PG_PORT',
    edgeOpsPort: 'EDGE_OPS_PORT',
    coreOpsPort: 'CORE_OPS_PORT',
    databaseUrl: 'DATABASE_URL',
    nodeArgs: 'DOCFLOW_NODE_ARGS',
    editPartitions: EDIT_PARTITIONS_VAR,
    edgeProcesses: 'EDGE_PROCESSES',
    edgePortPerProcess: 'EDGE_PORT_PER_PROCESS',
    coreProcesses: 'CORE_PROCESSES',
  },
)

const dataDir = dataDirOf(process.env)
const runDir = join(dataDir, 'run')
const pidOf = (name: string) => join(runDir, `${name}.pid`)
/** Edge i (0-based) of EDGE_PROCESSES: `edge`, then `edge-2`, `edge-3`, ... */
const edgeName = (i: number) => (i === 0 ? 'edge' : `edge-${i + 1}`)
/** Counting down from EDGE_OPS_PORT, clear of CORE_OPS_PORT's default just above it. */
const edgeOpsPort = (i: number) => config.edgeOpsPort - i
/** EDGE_PORT for every edge (SO_REUSEPORT), or with EDGE_PORT_PER_PROCESS counting down like the ops ports. */
const edgePublicPort = (i: number) => (config.edgePortPerProcess ? config.edgePort - i : config.edgePort)
/** Core i (0-based) of CORE_PROCESSES: `core`, then `core-2`, ...; ports count up from CORE_PORT and CORE_OPS_PORT. */
const coreName = (i: number) => (i === 0 ? 'core' : `core-${i + 1}`)
const corePublicPort = (i: number) => config.corePort + i
const coreOpsPort = (i: number) => config.coreOpsPort + i

const ports: [string, number][] = [
  ['EDGE_PORT', config.edgePort],
  ...Array.from({ length: config.edgePortPerProcess ? config.edgeProcesses - 1 : 0 }, (_, i) => [`EDGE_PORT (${config.edgePort} - ${i + 1} for edge ${i + 2}, EDGE_PORT_PER_PROCESS)`, edgePublicPort(i + 1)] as [string, number]),
  ...Array.from({ length: config.coreProcesses }, (_, i) => [i === 0 ? 'CORE_PORT' : `CORE_PORT (${config.corePort} + ${i} for core ${i + 1} of CORE_PROCESSES)`, corePublicPort(i)] as [string, number]),
  ['NATS_PORT', config.natsPort],
  ['NATS_MONITOR_PORT', config.natsMonitorPort],
  ...Array.from({ length: config.edgeProcesses }, (_, i) => [i === 0 ? 'EDGE_OPS_PORT' : `EDGE_OPS_PORT (${config.edgeOpsPort} - ${i} for edge ${i + 1} of EDGE_PROCESSES)`, edgeOpsPort(i)] as [string, number]),
  ...Array.from({ length: config.coreProcesses }, (_, i) => [i === 0 ? 'CORE_OPS_PORT' : `CORE_OPS_PORT (${config.coreOpsPort} + ${i} for core ${i + 1} of CORE_PROCESSES)`, coreOpsPort(i)] as [string, number]),
  ...(config.databaseUrl ? [] : ([['PG_PORT', config.pgPort]] as [string, number][])),
]
// Before anything is touched: a port derived past the range would otherwise fail deep in the start.
for (const [name, port] of ports) {
  if (port < 1 || port > MAX_PORT) {
    console.error(`docflow: ${name} is ${port}, outside 1-${MAX_PORT}; npm start needs fixed ports, with room below EDGE_OPS_PORT for EDGE_PROCESSES and above CORE_PORT and CORE_OPS_PORT for CORE_PROCESSES.`)
    process.exit(2)
  }
  const other = ports.find(([n, p]) => p === port && n !== name)
  if (other) {
    console.error(`docflow: ${name} and ${other[0]} are both ${port}; give each part its own port.`)
    process.exit(1)
  }
}

const logsDir = join(dataDir, 'logs')
mkdirSync(logsDir, { recursive: true })
mkdirSync(runDir, { recursive: true })
const pidFile = supervisorPidFile(dataDir)
const other = claimPidFile(pidFile)
if (other) {
  console.error(`docflow: ${alreadyRunning(other, dataDir)}`)
  process.exit(1)
}

// A supervisor killed with -9 leaves its parts running: stop them before checking ports.
const leftovers = stopLeftovers(dataDir)
if (leftovers.length > 0) console.log(`docflow: stopped what a killed supervisor left running: ${leftovers.join(', ')}`)
for (const [name, port] of ports) {
  if (!(await portFree(port))) {
    rmSync(pidFile, { force: true })
    console.error(`docflow: port ${port} is taken by another program; free it or set ${name} to another port.`)
    process.exit(1)
  }
}

const stoppers: (() => Promise<void>)[] = []
const parts: Supervised[] = []
let shuttingDown: Promise<never> | null = null
/**
 * Drains and stops every part, once: a second signal (Ctrl-C reaches the whole process group,
 * and the bootstrap forwards it too) waits for the same shutdown instead of cutting it short.
 */
function shutdown(reason: string, code = 0): Promise<never> {
  shuttingDown ??= (async () => {
    console.log(`docflow: ${reason}; draining and stopping`)
    // A part that exits from here on (the terminal's signal reached it too) is not restarted.
    for (const part of parts) part.noMoreRestarts()
    for (const stop of stoppers.reverse()) {
      await stop().catch((err: unknown) => console.error(`docflow: stop step failed: ${(err as Error).message}`))
    }
    rmSync(pidFile, { force: true })
    console.log('docflow: stopped')
    process.exit(code)
  })()
  return shuttingDown
}
process.on('SIGINT', () => void shutdown('SIGINT'))
process.on('SIGTERM', () => void shutdown('SIGTERM'))

const say = (line: string) => console.log(`docflow: ${line}`)
/** Starts a part under supervision; shutdown stops the parts in reverse order. */
async function supervise(name: string, logFile: string, launch: () => Promise<Running>): Promise<void> {
  const part = new Supervised({ name, launch, pidFile: pidOf(name), logFile, say })
  parts.push(part)
  stoppers.push(() => part.stop())
  await part.start()
}

try {
  say('starting nats-server')
  const natsDir = join(dataDir, 'nats')
  const provisioned = existsSync(natsFiles(natsDir).registry) ? Registry.open(natsFiles(natsDir).registry).editPartitions : undefined
  if (provisioned !== undefined && config.editPartitions !== undefined && config.editPartitions !== provisioned) {
    throw new Error(`${dataDir} was provisioned with ${provisioned} edit partitions; ${EDIT_PARTITIONS_VAR}=${config.editPartitions} would move documents between partitions. Unset it, or use a new DOCFLOW_DATA_DIR.`)
  }
  const natsOptions = { dir: natsDir, port: config.natsPort, monitorPort: config.natsMonitorPort, editPartitions: config.editPartitions, ownProcessGroup: true }
  const natsUrl = `nats://127.0.0.1:${config.natsPort}`
  await supervise('nats-server', natsFiles(natsDir).log, () => startNatsServer(natsOptions))
  let databaseUrl = config.databaseUrl
  if (!databaseUrl) {
    say('starting PostgreSQL')
    const pgDir = join(dataDir, 'pg')
    let url = ''
    await supervise('postgres', join(pgDir, 'postgres.log'), async () => {
      const pg = await startPostgres({ dir: pgDir, port: config.pgPort, say, ownProcessGroup: true })
      url = pg.url
      return pg
    })
    databaseUrl = url
  }
  say('provisioning tenants')
  const provisioner = await Provisioner.open({ natsDir, natsUrl, databaseUrl, progress: (line) => say(`  ${line}`) })
  stoppers.push(() => provisioner.close())
  await provisioner.init()
  for (const tenant of DEV_TENANTS) await provisioner.ensure(tenant, DEV_TENANT_QUOTA_BYTES)
  provisioner.serveAutoProvisioning(DEV_AUTO_TENANT_QUOTA_BYTES, (err, tenant) => console.error(`docflow: auto-provisioning ${tenant} failed: ${(err as Error).message}`))
  const registry = Registry.open(natsFiles(natsDir).registry)
  say('compiling edge and core')
  const dist = buildServers(ROOT, join(dataDir, 'dist'), say)
  const env = {
    NATS_URL: natsUrl,
    DATABASE_URL: databaseUrl,
    CORE_PORT: String(config.corePort),
    EDGE_PORT: String(config.edgePort),
    CORE_OPS_PORT: String(config.coreOpsPort),
    EDGE_OPS_PORT: String(config.edgeOpsPort),
    CORE_NATS_USER: ServiceUser.Core,
    CORE_NATS_PASS: registry.servicePassword(ServiceUser.Core),
    EDGE_NATS_USER: ServiceUser.Edge,
    EDGE_NATS_PASS: registry.servicePassword(ServiceUser.Edge),
    EDGE_AUTO_PROVISION_TENANTS: 'true',
    // Core sends rollback updates through the edge's HTTP ingest (core/rollback.ts).
    CORE_EDGE_URL: `http://127.0.0.1:${config.edgePort}`,
    [EDIT_PARTITIONS_VAR]: String(registry.editPartitions),
    // Snapshots go to a folder under the data folder unless S3 settings are given (DOCFLOW_S3_*, passed through).
    [BLOB_STORE_VARS.blobDir]: process.env[BLOB_STORE_VARS.blobDir] || blobDirOf(dataDir),
  }
  const nodeArgs = config.nodeArgs.split(/\s+/).filter(Boolean)
  for (let i = 0; i < config.coreProcesses; i++) {
    const name = coreName(i)
    const logFile = join(logsDir, `${name}.log`)
    await supervise(name, logFile, nodeProcess(name, join(dist, 'core', 'main.js'), nodeArgs, { ...env, CORE_PORT: String(corePublicPort(i)), CORE_OPS_PORT: String(coreOpsPort(i)) }, `http://127.0.0.1:${coreOpsPort(i)}/healthz`, logFile, pidOf(name)))
  }
  for (let i = 0; i < config.edgeProcesses; i++) {
    const name = edgeName(i)
    const logFile = join(logsDir, `${name}.log`)
    const opsPort = edgeOpsPort(i)
    await supervise(name, logFile, nodeProcess(name, join(dist, 'edge', 'main.js'), nodeArgs, { ...env, EDGE_PORT: String(edgePublicPort(i)), EDGE_OPS_PORT: String(opsPort) }, `http://127.0.0.1:${opsPort}/healthz`, logFile, pidOf(name)))
  }
  const edgeOps = Array.from({ length: config.edgeProcesses }, (_, i) => `http://127.0.0.1:${edgeOpsPort(i)}/metrics`)
  writeFileSync(join(dataDir, 'endpoints.json'), JSON.stringify({ edge: `ws://127.0.0.1:${config.edgePort}`, core: `http://127.0.0.1:${config.corePort}`, nats: natsUrl, databaseUrl }, null, 2))
  console.log(`
DocFlow is running.
  edge (y-websocket)  ws://localhost:${config.edgePort}/<docId>?token=<jwt>${config.edgeProcesses > 1 ? (config.edgePortPerProcess ? `   (edge i of ${config.edgeProcesses} on port ${config.edgePort} - i)` : `   (${config.edgeProcesses} edge processes share the port)`) : ''}
  edge (HTTP ingest)  POST http://localhost:${config.edgePort}/v1/docs/<docId>/updates
  core (read API)     http://localhost:${config.corePort}/v1/docs/<docId>/state${config.coreProcesses > 1 ? `   (core i of ${config.coreProcesses} on port ${config.corePort} + i; they share the partitions)` : ''}
  snapshots           ${process.env[BLOB_STORE_VARS.s3Bucket] ? `s3://${process.env[BLOB_STORE_VARS.s3Bucket]}/${process.env[BLOB_STORE_VARS.s3Prefix] ?? ''}` : env[BLOB_STORE_VARS.blobDir]}
  metrics             ${edgeOps.join(', ')} (edge), ${Array.from({ length: config.coreProcesses }, (_, i) => `http://127.0.0.1:${coreOpsPort(i)}/metrics`).join(', ')} (core)
  dev token           npm run token -- --tenant acme
  tenants             npm run tenant -- list   (acme, globex; others are added on first sight in dev)
  logs                ${logsDir}
Ctrl-C (or npm stop) drains and stops everything.`)
} catch (err) {
  console.error(`docflow: start failed: ${(err as Error).message}`)
  await shutdown('start failed', 1)
}
