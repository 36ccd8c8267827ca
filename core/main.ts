import { hostname } from 'node:os'
import pg from 'pg'
import { z } from 'zod'
import { AGG_STREAM, EDIT_PARTITIONS_VAR, ServiceUser, serviceInboxPrefix } from '../contracts/mod.ts'
import { BLOB_STORE_VARS, BlobStoreConfig, EditPartitions, JWT_VARS, JwtConfig, LogLevel, Port, PositiveInt, connectOrExit, loadConfigOrExit } from '../runtime/config.ts'
import { openBlobStore } from '../runtime/blobs/blob-store.ts'
import { tokenPolicy } from '../runtime/jwt.ts'
import { capHeapGrowth } from '../runtime/heap.ts'
import { createLogger, hideCredentials } from '../runtime/log.ts'
import { connectNats } from '../runtime/nats.ts'
import { drainOnSignal } from '../runtime/shutdown.ts'
import { DEFAULT_LATE_AFTER_MS } from './batch.ts'
import { Core } from './core.ts'
import { DEFAULT_GAP_REPORT_AFTER_MS } from './gap-watch.ts'
import { SNAPSHOT_DEFAULTS } from './snapshots.ts'
import { DEFAULT_COMPACT_AFTER_MS, DEFAULT_DOC_CACHE_BYTES } from './doc-cache.ts'
import { SNAPSHOT_RETENTION_DEFAULTS } from './snapshot-retention.ts'
import { DeploymentMismatchError } from './errors.ts'
import { DEFAULT_MAX_HEAVY_READS } from './read-api.ts'

const Config = z.object({
  logLevel: LogLevel,
  port: Port.default(8081),
  host: z.string().default('0.0.0.0'),
  opsPort: Port.default(9081),
  opsHost: z.string().default('127.0.0.1'),
  natsUrl: z.string().default('nats://127.0.0.1:4222'),
  natsUser: z.string().optional(),
  natsPass: z.string().optional(),
  // pg reads anything else as a host name relative to postgres://base (ENOTFOUND base).
  databaseUrl: z.string().regex(/^(?:postgres(?:ql)?:\/\/|socket:|\/)/, 'a postgres://user:password@host:port/database URL'),
  ...JwtConfig,
  stream: z.string().default(AGG_STREAM),
  editPartitions: EditPartitions,
  maxBatch: PositiveInt.default(512),
  maxDocs: PositiveInt.default(2_000),
  compactEveryOps: PositiveInt.default(256),
  lateAfterMs: PositiveInt.default(DEFAULT_LATE_AFTER_MS),
  ackWaitMs: PositiveInt.default(30_000),
  maxAckPending: PositiveInt.default(1_024),
  leaseRetryMs: PositiveInt.default(2_000),
  leaseTtlMs: PositiveInt.default(5_000),
  leaseRenewMs: PositiveInt.default(1_000),
  retryDelayMs: PositiveInt.default(1_000),
  monitorIntervalMs: PositiveInt.default(15_000),
  snapshotIntervalMs: PositiveInt.default(SNAPSHOT_DEFAULTS.snapshotIntervalMs),
  snapshotsPerSecond: PositiveInt.default(SNAPSHOT_DEFAULTS.maxPerSecond),
  gapReportAfterMs: PositiveInt.default(DEFAULT_GAP_REPORT_AFTER_MS),
  compactAfterMs: PositiveInt.default(DEFAULT_COMPACT_AFTER_MS),
  docCacheMb: PositiveInt.default(DEFAULT_DOC_CACHE_BYTES / 1024 ** 2),
  snapshotRetentionDays: PositiveInt.default(SNAPSHOT_RETENTION_DEFAULTS.retentionDays),
  edgeUrl: z.url({ protocol: /^https?$/ }).default('http://127.0.0.1:8080'),
  maxHeavyReads: PositiveInt.default(DEFAULT_MAX_HEAVY_READS),
  // SIGTERM to exit at most (runtime/shutdown.ts): a frozen PostgreSQL never answers the commit in
  // hand. What is not committed is not acked, so the next owner gets it again. Under helm's 90 s
  // grace period less its 5 s preStop; npm start kills a part after 20 s anyway.
  stopDeadlineMs: PositiveInt.default(30_000),
}).refine((c) => c.leaseRenewMs * 2 <= c.leaseTtlMs, { path: ['leaseRenewMs'], message: 'must be at most half of CORE_LEASE_TTL_MS (a lease renews several times before it goes stale)' })

capHeapGrowth()
const config = loadConfigOrExit(Config, {
  logLevel: 'LOG_LEVEL',
  port: 'CORE_PORT',
  host: 'CORE_HOST',
  opsPort: 'CORE_OPS_PORT',
  opsHost: 'CORE_OPS_HOST',
  natsUrl: 'NATS_URL',
  natsUser: 'CORE_NATS_USER',
  natsPass: 'CORE_NATS_PASS',
  databaseUrl: 'DATABASE_URL',
  ...JWT_VARS,
  stream: 'CORE_STREAM',
  editPartitions: EDIT_PARTITIONS_VAR,
  maxBatch: 'CORE_MAX_BATCH',
  maxDocs: 'CORE_MAX_DOCS',
  compactEveryOps: 'CORE_COMPACT_EVERY_OPS',
  lateAfterMs: 'CORE_LATE_AFTER_MS',
  ackWaitMs: 'CORE_ACK_WAIT_MS',
  maxAckPending: 'CORE_MAX_ACK_PENDING',
  leaseRetryMs: 'CORE_LEASE_RETRY_MS',
  leaseTtlMs: 'CORE_LEASE_TTL_MS',
  leaseRenewMs: 'CORE_LEASE_RENEW_MS',
  retryDelayMs: 'CORE_RETRY_DELAY_MS',
  monitorIntervalMs: 'CORE_MONITOR_INTERVAL_MS',
  snapshotIntervalMs: 'CORE_SNAPSHOT_INTERVAL_MS',
  snapshotsPerSecond: 'CORE_SNAPSHOTS_PER_S',
  gapReportAfterMs: 'CORE_GAP_REPORT_AFTER_MS',
  stopDeadlineMs: 'CORE_STOP_DEADLINE_MS',
  compactAfterMs: 'CORE_COMPACT_AFTER_MS',
  docCacheMb: 'CORE_DOC_CACHE_MB',
  snapshotRetentionDays: 'CORE_SNAPSHOT_RETENTION_DAYS',
  edgeUrl: 'CORE_EDGE_URL',
  maxHeavyReads: 'CORE_MAX_HEAVY_READS',
})
const log = createLogger('core', config.logLevel)
const blobs = await openBlobStore(loadConfigOrExit(BlobStoreConfig, BLOB_STORE_VARS))
log.info({ blobs: blobs.location }, 'blob store open')
const nc = await connectOrExit(
  'core',
  `NATS at NATS_URL (${hideCredentials(config.natsUrl)}${config.natsUser ? ` as CORE_NATS_USER=${config.natsUser} with CORE_NATS_PASS` : ''})`,
  connectNats({ servers: config.natsUrl, user: config.natsUser, pass: config.natsPass, name: `core-${hostname()}-${process.pid}`, inboxPrefix: serviceInboxPrefix(ServiceUser.Core) }, log),
  log,
)
// One query on a session of its own first, so a wrong DATABASE_URL is named here rather than thrown
// as a pg stack from inside core.start(); the timeout keeps an address that drops packets from
// stalling the start for the kernel's two minutes.
const probe = new pg.Pool({ connectionString: config.databaseUrl, max: 1, connectionTimeoutMillis: 10_000 })
await connectOrExit('core', `PostgreSQL at DATABASE_URL (${hideCredentials(config.databaseUrl)})`, probe.query('SELECT 1').finally(() => probe.end()), log)
const core = new Core({ ...config, maxDocCacheBytes: config.docCacheMb * 1024 ** 2, tokens: tokenPolicy(config), blobs }, nc, log)
let port: number
try {
  port = await core.start()
} catch (err) {
  if (!(err instanceof DeploymentMismatchError)) throw err
  process.stderr.write(`invalid core configuration: ${err.message}\n`)
  process.exit(2)
}
log.info({ port, opsPort: core.opsPort }, 'core listening')

drainOnSignal('core', core, nc, log, config.stopDeadlineMs)
