import { z } from 'zod'
import { DEFAULT_EDIT_PARTITIONS, MAX_BLOB_PREFIX_BYTES, MAX_EDIT_PARTITIONS, isBlobKey } from '../contracts/mod.ts'
import { DEFAULT_CLOCK_TOLERANCE_S, DEFAULT_JWKS_CACHE_MAX_AGE_MS, DEFAULT_JWKS_COOLDOWN_MS, DEFAULT_JWKS_TIMEOUT_MS } from './jwt.ts'
import { LOG_LEVELS, REDACTED, hideCredentials, type Logger } from './log.ts'

export class ConfigError extends Error {
  override name = 'ConfigError'
}

/**
 * Reads a process's config from environment variables. `vars` maps each config key to its
 * variable name; the schema supplies defaults and units. A bad value fails with every problem
 * named by its variable.
 */
export function loadConfig<S extends z.ZodObject>(
  schema: S,
  vars: Record<keyof z.infer<S> & string, string>,
  env: NodeJS.ProcessEnv = process.env,
): z.infer<S> {
  const raw: Record<string, string> = {}
  for (const [key, name] of Object.entries(vars) as [string, string][]) {
    const value = env[name]
    if (value !== undefined && value !== '') raw[key] = value
  }
  const parsed = schema.safeParse(raw)
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => {
      const key = String(i.path[0] ?? '')
      const name = (vars as Record<string, string>)[key] ?? key
      return `  ${name}=${shownValue(name, raw[key] ?? '')}: ${i.message}`
    })
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`)
  }
  return parsed.data
}

/** Variables whose whole value is a secret: named *_PASS, *_PASSWORD, *_SECRET, *_TOKEN, *_KEY or *CREDENTIALS*. */
const SECRET_VAR = /(?:_PASS|_PASSWORD|_SECRET|_TOKEN|_KEY)$|CREDENTIAL/i

/**
 * A variable's value as a config error shows it: a secret variable's not at all, any other with
 * the credentials of its URLs hidden (DATABASE_URL, NATS_URL): error output ends up in logs.
 */
function shownValue(name: string, value: string): string {
  return SECRET_VAR.test(name) ? REDACTED : JSON.stringify(hideCredentials(value))
}

/** loadConfig for a process entry point: a bad value prints what is wrong and exits 2. */
export function loadConfigOrExit<S extends z.ZodObject>(schema: S, vars: Record<keyof z.infer<S> & string, string>): z.infer<S> {
  try {
    return loadConfig(schema, vars)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    process.stderr.write(`${err.message}\n`)
    process.exit(2)
  }
}

/**
 * The start-time counterpart of loadConfigOrExit, for a variable that is well formed but points at
 * something that cannot be reached: a failure of `connecting` prints one line naming `what` (the
 * variable and its value, credentials hidden) and the reason, and exits 1. A stack would bury the
 * cause (a supervisor shows a log's last lines); the full error is logged at debug level.
 */
export async function connectOrExit<T>(service: string, what: string, connecting: Promise<T>, log: Logger): Promise<T> {
  try {
    return await connecting
  } catch (err) {
    log.debug({ err }, `cannot connect to ${what}`)
    process.stderr.write(`${service}: cannot connect to ${what}: ${hideCredentials(reasonOf(err))}\n`)
    process.exit(1)
  }
}

/** An error's own message and its cause's (nats.js wraps "connect ECONNREFUSED ..." in "connection refused"). */
function reasonOf(err: unknown): string {
  if (!(err instanceof Error)) return String(err)
  // An AggregateError (every address of a host refused) has no message of its own, only a code.
  const own = err.message || (err as NodeJS.ErrnoException).code || err.name
  const cause = err.cause instanceof Error ? err.cause.message : ''
  return cause && !own.includes(cause) ? `${own} (${cause})` : own
}

/** LOG_LEVEL: checked with the rest of the config, before the logger is made with it. Default info. */
export const LogLevel = z.enum(LOG_LEVELS, { error: `one of ${LOG_LEVELS.join(', ')}` }).default('info')

/** Port numbers from the environment. */
export const Port = z.coerce.number().int().min(0).max(65_535)
/** Positive integer from the environment (ms, bytes, counts). */
export const PositiveInt = z.coerce.number().int().positive()

/** DOCFLOW_EDIT_PARTITIONS: fixed when a deployment is first provisioned (contracts/subjects.ts). */
export const EditPartitionCount = z.coerce.number().int().min(1).max(MAX_EDIT_PARTITIONS)
export const EditPartitions = EditPartitionCount.default(DEFAULT_EDIT_PARTITIONS)

/** Dev default for DOCFLOW_JWT_SECRET; production refuses to run with it. */
export const DEV_JWT_SECRET = 'docflow-dev-secret-do-not-use-in-production'

/** HS256 needs a key at least as long as its 256-bit output (RFC 7518 §3.2). */
export const JWT_MIN_SECRET_BYTES = 32

export const JwtSecret = z
  .string()
  .refine((s) => Buffer.byteLength(s, 'utf8') >= JWT_MIN_SECRET_BYTES, `at least ${JWT_MIN_SECRET_BYTES} bytes (HS256)`)
  .default(DEV_JWT_SECRET)
  .refine((s) => s !== DEV_JWT_SECRET || process.env.NODE_ENV !== 'production', 'DOCFLOW_JWT_SECRET must be set when NODE_ENV=production')

/** Keys are trusted for signatures: fetched over TLS, except from this machine (tests, a local IdP). */
export const JwksUrl = z
  .url()
  .refine((u) => {
    if (!URL.canParse(u)) return false
    const url = new URL(u)
    return url.protocol === 'https:' || (url.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname))
  }, 'an https:// URL (http:// only for 127.0.0.1 or localhost)')

/** Token settings every process that verifies client tokens reads; spread into its config schema. */
export const JwtConfig = {
  jwtSecret: JwtSecret,
  jwtIssuer: z.string().min(1).optional(),
  jwtAudience: z.string().min(1).optional(),
  /** Accepted clock skew between the token issuer and us. Default 30 s. */
  jwtClockToleranceS: z.coerce.number().int().min(0).max(300).default(DEFAULT_CLOCK_TOLERANCE_S),
  /** The identity provider's key set for RS256/ES256 tokens. Default unset: HS256 only. */
  jwksUrl: JwksUrl.optional(),
  /** Longest wait for the JWKS URL. Default 5_000. */
  jwksTimeoutMs: z.coerce.number().int().min(100).max(60_000).default(DEFAULT_JWKS_TIMEOUT_MS),
  /** Keys are fetched again after this long. Default 600_000 (10 min). */
  jwksCacheMaxAgeMs: z.coerce.number().int().min(1_000).default(DEFAULT_JWKS_CACHE_MAX_AGE_MS),
  /** An unknown `kid` fetches the key set again at most this often. Default 30_000. */
  jwksCooldownMs: z.coerce.number().int().min(0).default(DEFAULT_JWKS_COOLDOWN_MS),
}

/** Environment variables of JwtConfig. */
export const JWT_VARS = {
  jwtSecret: 'DOCFLOW_JWT_SECRET',
  jwtIssuer: 'DOCFLOW_JWT_ISSUER',
  jwtAudience: 'DOCFLOW_JWT_AUDIENCE',
  jwtClockToleranceS: 'DOCFLOW_JWT_CLOCK_TOLERANCE_S',
  jwksUrl: 'DOCFLOW_JWKS_URL',
  jwksTimeoutMs: 'DOCFLOW_JWKS_TIMEOUT_MS',
  jwksCacheMaxAgeMs: 'DOCFLOW_JWKS_CACHE_MAX_AGE_MS',
  jwksCooldownMs: 'DOCFLOW_JWKS_COOLDOWN_MS',
} as const

/** S3 bucket names (path-style safe): 3-63 of a-z, 0-9, ".", "-", starting and ending with a letter or digit. */
const S3Bucket = z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'an S3 bucket name: 3-63 of a-z, 0-9, "." and "-"')

/**
 * Where snapshots (and later the archive) are kept: S3 when DOCFLOW_S3_BUCKET is set, else the
 * folder DOCFLOW_BLOB_DIR (`npm start` passes <data folder>/blobs, runtime/blobs blobDirOf).
 * S3 credentials come from the SDK's default chain (AWS_ACCESS_KEY_ID/..., web identity on EKS).
 * S3 settings without a bucket, a bucket without a region, or neither store fail at start.
 */
export const BlobStoreConfig = z
  .object({
    /** Filesystem store folder. Default unset (npm start sets it). */
    blobDir: z.string().min(1).optional(),
    /** S3 bucket; set, it wins over blobDir. Default unset. */
    s3Bucket: S3Bucket.optional(),
    /** Key prefix inside the bucket, e.g. `docflow/`. Default "" (keys at the bucket's root). */
    s3Prefix: z
      .string()
      .transform((p) => (p.endsWith('/') ? p : `${p}/`))
      .refine((p) => p.length <= MAX_BLOB_PREFIX_BYTES && isBlobKey(p.slice(0, -1)), `segments of A-Za-z0-9._=~- (none starting with "."), at most ${MAX_BLOB_PREFIX_BYTES} bytes`)
      .optional(),
    /** The bucket's region, e.g. eu-west-1. Required with a bucket. */
    s3Region: z.string().regex(/^[a-z0-9-]+$/, 'an AWS region name').optional(),
    /** S3-API endpoint other than AWS's (MinIO, s3rver), addressed path-style. Default unset. */
    s3Endpoint: z.url().optional(),
  })
  .superRefine((c, ctx) => {
    if (c.s3Bucket === undefined) {
      for (const key of ['s3Prefix', 's3Region', 's3Endpoint'] as const) {
        if (c[key] !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: `given without ${BLOB_STORE_VARS.s3Bucket}: set the bucket too, or unset it` })
      }
      if (c.blobDir === undefined) ctx.addIssue({ code: 'custom', path: ['blobDir'], message: `no blob store: set ${BLOB_STORE_VARS.blobDir} (npm start: <data folder>/blobs) or ${BLOB_STORE_VARS.s3Bucket}` })
    } else if (c.s3Region === undefined) {
      ctx.addIssue({ code: 'custom', path: ['s3Region'], message: `${BLOB_STORE_VARS.s3Bucket} needs its region` })
    }
  })
export type BlobStoreConfig = z.infer<typeof BlobStoreConfig>

/** Environment variables of BlobStoreConfig. */
export const BLOB_STORE_VARS = {
  blobDir: 'DOCFLOW_BLOB_DIR',
  s3Bucket: 'DOCFLOW_S3_BUCKET',
  s3Prefix: 'DOCFLOW_S3_PREFIX',
  s3Region: 'DOCFLOW_S3_REGION',
  s3Endpoint: 'DOCFLOW_S3_ENDPOINT',
} as const
