import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import { z } from 'zod'
import { EDIT_PARTITIONS_VAR, ServiceUser, serviceInboxPrefix } from '../contracts/mod.ts'
import { EditPartitions, JWT_VARS, JwtConfig, LogLevel, Port, PositiveInt, connectOrExit, loadConfigOrExit } from '../runtime/config.ts'
import { tokenPolicy } from '../runtime/jwt.ts'
import { capHeapGrowth } from '../runtime/heap.ts'
import { createLogger, hideCredentials } from '../runtime/log.ts'
import { connectNats } from '../runtime/nats.ts'
import { drainOnSignal } from '../runtime/shutdown.ts'
import { EDGE_STOP_DEADLINE_MS, Edge } from './edge.ts'
import { EdgeOptionsError } from './errors.ts'
import { LIMIT_DEFAULTS, limitMin, type EdgeLimits } from './limits.ts'

const Config = z.object({
  logLevel: LogLevel,
  port: Port.default(8080),
  host: z.string().default('0.0.0.0'),
  opsPort: Port.default(9080),
  opsHost: z.string().default('127.0.0.1'),
  natsUrl: z.string().default('nats://127.0.0.1:4222'),
  natsUser: z.string().optional(),
  natsPass: z.string().optional(),
  ...JwtConfig,
  // Default: the server's max_payload minus the envelope margin (the edge checks it at start).
  maxMessageBytes: PositiveInt.optional(),
  maxBufferedBytes: PositiveInt.default(4 * 1024 * 1024),
  stateTimeoutMs: PositiveInt.default(3_000),
  resyncDelayMs: PositiveInt.default(1_500),
  editPartitions: EditPartitions,
  publishAckTimeoutMs: PositiveInt.default(2_000),
  publishAttempts: PositiveInt.default(5),
  publishLingerMs: z.coerce.number().int().min(0).default(15),
  publishBatchTarget: PositiveInt.default(24),
  publishBusyUpdatesPerS: z.coerce.number().int().min(0).default(500),
  publishMaxBatchUpdates: PositiveInt.default(512),
  publishMaxBatchBytes: PositiveInt.default(1024 * 1024),
  maxAwarenessBytes: PositiveInt.optional(),
  awarenessPerSecond: PositiveInt.optional(),
  awarenessBurst: PositiveInt.optional(),
  awarenessIdsPerSocket: PositiveInt.optional(),
  autoProvisionTenants: z.enum(['true', 'false']).default('false').transform((v) => v === 'true'),
  clientIpHeader: z.string().regex(/^[a-z0-9-]+$/, 'a lower-case header name, e.g. x-forwarded-for').optional(),
  // Limits (edge/limits.ts LIMIT_DEFAULTS when unset; 0 turns a rate off).
  ...limitFields(),
})

/** Each limit of LIMIT_DEFAULTS as an optional number, refused here below the limiter's minimum so the error names its variable. */
function limitFields() {
  return Object.fromEntries(
    (Object.keys(LIMIT_DEFAULTS) as (keyof EdgeLimits)[]).map((k) => {
      const min = limitMin(k)
      return [k, z.coerce.number().int().min(min, min === 0 ? 'at least 0 (0 turns it off)' : 'at least 1 (0 would refuse everything)').optional()]
    }),
  ) as Record<keyof EdgeLimits, z.ZodOptional<z.ZodCoercedNumber>>
}

/** EDGE_LIMIT_<NAME> for each limit, e.g. connectionUpdatesPerS -> EDGE_LIMIT_CONNECTION_UPDATES_PER_S. */
const LIMIT_VARS = Object.fromEntries(Object.keys(LIMIT_DEFAULTS).map((k) => [k, `EDGE_LIMIT_${k.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`])) as Record<keyof EdgeLimits, string>

capHeapGrowth()
const config = loadConfigOrExit(Config, {
  logLevel: 'LOG_LEVEL',
  port: 'EDGE_PORT',
  host: 'EDGE_HOST',
  opsPort: 'EDGE_OPS_PORT',
  opsHost: 'EDGE_OPS_HOST',
  natsUrl: 'NATS_URL',
  natsUser: 'EDGE_NATS_USER',
  natsPass: 'EDGE_NATS_PASS',
  ...JWT_VARS,
  maxMessageBytes: 'EDGE_MAX_MESSAGE_BYTES',
  maxBufferedBytes: 'EDGE_MAX_BUFFERED_BYTES',
  stateTimeoutMs: 'EDGE_STATE_TIMEOUT_MS',
  resyncDelayMs: 'EDGE_RESYNC_DELAY_MS',
  editPartitions: EDIT_PARTITIONS_VAR,
  publishAckTimeoutMs: 'EDGE_PUBLISH_ACK_TIMEOUT_MS',
  publishAttempts: 'EDGE_PUBLISH_ATTEMPTS',
  publishLingerMs: 'EDGE_PUBLISH_LINGER_MS',
  publishBatchTarget: 'EDGE_PUBLISH_BATCH_TARGET',
  publishBusyUpdatesPerS: 'EDGE_PUBLISH_BUSY_UPDATES_PER_S',
  publishMaxBatchUpdates: 'EDGE_PUBLISH_MAX_BATCH_UPDATES',
  publishMaxBatchBytes: 'EDGE_PUBLISH_MAX_BATCH_BYTES',
  maxAwarenessBytes: 'EDGE_MAX_AWARENESS_BYTES',
  awarenessPerSecond: 'EDGE_AWARENESS_PER_SECOND',
  awarenessBurst: 'EDGE_AWARENESS_BURST',
  awarenessIdsPerSocket: 'EDGE_AWARENESS_IDS_PER_SOCKET',
  autoProvisionTenants: 'EDGE_AUTO_PROVISION_TENANTS',
  clientIpHeader: 'EDGE_CLIENT_IP_HEADER',
  ...LIMIT_VARS,
})
const log = createLogger('edge', config.logLevel)
const edgeId = `edge-${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`
const nc = await connectOrExit(
  'edge',
  `NATS at NATS_URL (${hideCredentials(config.natsUrl)}${config.natsUser ? ` as EDGE_NATS_USER=${config.natsUser} with EDGE_NATS_PASS` : ''})`,
  connectNats({ servers: config.natsUrl, user: config.natsUser, pass: config.natsPass, name: edgeId, inboxPrefix: serviceInboxPrefix(ServiceUser.Edge) }, log),
  log,
)
let edge: Edge
try {
  const awareness = { maxAwarenessBytes: config.maxAwarenessBytes, awarenessPerSecond: config.awarenessPerSecond, awarenessBurst: config.awarenessBurst, awarenessIdsPerSocket: config.awarenessIdsPerSocket }
  const limits = Object.fromEntries(Object.keys(LIMIT_DEFAULTS).flatMap((k) => (config[k as keyof EdgeLimits] === undefined ? [] : [[k, config[k as keyof EdgeLimits]]])))
  edge = new Edge({ ...config, edgeId, tokens: tokenPolicy(config), awareness, limits }, nc, log)
} catch (err) {
  if (!(err instanceof EdgeOptionsError)) throw err
  process.stderr.write(`invalid edge configuration: ${err.message}\n`)
  process.exit(2)
}
let port: number
try {
  port = await edge.start()
} catch (err) {
  // The last line of the log, where a supervisor's start report looks (a port taken meanwhile).
  process.stderr.write(`edge failed to start: ${(err as Error).message}\n`)
  process.exit(1)
}
log.info({ port, opsPort: edge.opsPort, edgeId }, 'edge listening')

drainOnSignal('edge', edge, nc, log, EDGE_STOP_DEADLINE_MS)
