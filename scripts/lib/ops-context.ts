// What an ops command talks to, found the way `npm start` leaves it: PostgreSQL from
// DATABASE_URL or the data folder's endpoints.json; NATS from NATS_URL or the data folder's
// nats-server options, as the service account's admin (credentials from the stack's registry);
// the blob store from DOCFLOW_BLOB_DIR / DOCFLOW_S3_* (core's settings), else the data folder's
// blobs/. Each is opened on first use and closed by close().
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream'
import { ServiceUser, tenantUser } from '../../contracts/mod.ts'
import { BLOB_STORE_VARS, BlobStoreConfig, loadConfig } from '../../runtime/config.ts'
import { blobDirOf, openBlobStore, type BlobStore } from '../../runtime/blobs/blob-store.ts'
import { dataDirOf } from './data-dir.mjs'
import { natsFiles } from './nats-server.ts'
import type { NatsConfigOptions } from './nats-config.ts'
import { Registry } from './registry.ts'

/** An ops command cannot run: the one-line reason it prints before exiting non-zero. */
export class OpsError extends Error {
  override name = 'OpsError'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
  }
}

/** PostgreSQL's SQLSTATEs for a table or function that does not exist (a schema older than this command). */
const MISSING_SCHEMA = new Set(['42P01', '42883'])

/** The error, or an OpsError saying core must migrate first when the schema lacks what the command uses. */
export function explainDbError(err: unknown): unknown {
  if (!MISSING_SCHEMA.has((err as { code?: string }).code ?? '')) return err
  return new OpsError(`the database schema is older than this command (${(err as Error).message}): start core once to migrate it`, { cause: err })
}

export class OpsContext {
  private pool: pg.Pool | null = null
  private nats: NatsConnection | null = null
  private blobStore: BlobStore | null = null
  private readonly tenantConnections: NatsConnection[] = []

  constructor(
    private readonly env: NodeJS.ProcessEnv = process.env,
    /** The `npm start` data folder. Default dataDirOf(env): DOCFLOW_DATA_DIR, else <project>/data. */
    readonly dataDir = dataDirOf(env),
  ) {}

  /** PostgreSQL, as core migrated it (core owns the schema: it applies migrations at its start). */
  async db(): Promise<pg.Pool> {
    if (this.pool) return this.pool
    const endpoints = join(this.dataDir, 'endpoints.json')
    const url = this.env.DATABASE_URL || (existsSync(endpoints) ? (JSON.parse(readFileSync(endpoints, 'utf8')) as { databaseUrl?: string }).databaseUrl : undefined)
    if (!url) throw new OpsError(`no database: set DATABASE_URL, or run \`npm start\` (it writes ${endpoints})`)
    const pool = new pg.Pool({ connectionString: url, max: 2, application_name: 'docflow-ops' })
    pool.on('error', () => undefined) // an idle connection dropping is seen by the next query
    await pool.query('SELECT 1').catch(async (err: unknown) => {
      await pool.end()
      throw new OpsError(`cannot reach PostgreSQL: ${(err as Error).message}`, { cause: err })
    })
    this.pool = pool
    return pool
  }

  /** The service account's admin connection (AGG, notices to edges and cores). */
  async nc(): Promise<NatsConnection> {
    this.nats ??= await this.connectAs(ServiceUser.Admin, this.registry().servicePassword(ServiceUser.Admin))
    return this.nats
  }

  async aggJsm(): Promise<JetStreamManager> {
    return jetstreamManager(await this.nc())
  }

  /** The tenant account's admin (its edit stream), or null when the registry does not know the tenant. */
  async tenantJsm(tenant: string): Promise<JetStreamManager | null> {
    const entry = this.registry().tenant(tenant)
    if (!entry) return null
    const nc = await this.connectAs(tenantUser(tenant, 'admin'), entry.passwords.admin)
    this.tenantConnections.push(nc)
    return jetstreamManager(nc)
  }

  async blobs(): Promise<BlobStore> {
    if (this.blobStore) return this.blobStore
    const config = loadConfig(BlobStoreConfig, BLOB_STORE_VARS, { [BLOB_STORE_VARS.blobDir]: blobDirOf(this.dataDir), ...this.env })
    this.blobStore = await openBlobStore(config)
    return this.blobStore
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.pool?.end(), this.nats?.drain(), this.blobStore?.close(), ...this.tenantConnections.map((c) => c.close())])
  }

  private registry(): Registry {
    const file = natsFiles(join(this.dataDir, 'nats')).registry
    if (!existsSync(file)) throw new OpsError(`no DocFlow stack in ${this.dataDir} (no ${file}); run \`npm start\` or set DOCFLOW_DATA_DIR`)
    return Registry.open(file)
  }

  private natsUrl(): string {
    if (this.env.NATS_URL) return this.env.NATS_URL
    const options = natsFiles(join(this.dataDir, 'nats')).options
    if (!existsSync(options)) throw new OpsError(`no nats-server settings in ${options}; run \`npm start\` or set NATS_URL`)
    return `nats://127.0.0.1:${(JSON.parse(readFileSync(options, 'utf8')) as NatsConfigOptions).port}`
  }

  private async connectAs(user: string, pass: string): Promise<NatsConnection> {
    const servers = this.natsUrl()
    try {
      return await connect({ servers, user, pass, name: `docflow-ops-${user}` })
    } catch (err) {
      throw new OpsError(`cannot reach nats-server at ${servers} as ${user} (is \`npm start\` running?): ${(err as Error).message}`, { cause: err })
    }
  }
}
