import type { z } from 'zod'
import { connect, type NatsConnection, type Subscription } from '@nats-io/transport-node'
import { JetStreamApiCodes, jetstreamManager, type JetStreamManager, type StreamSource } from '@nats-io/jetstream'
import { Kvm, type KV } from '@nats-io/kv'
import pg from 'pg'
import {
  AGG_STREAM,
  CLEAN_STREAM,
  DLQ_STREAM,
  ServiceUser,
  TENANTS_BUCKET,
  REVOCATIONS_BUCKET,
  REVOCATION_TTL_MS,
  Revocation,
  encodeRevocation,
  revocationKey,
  TENANT_ENSURE_SUBJECT,
  TenantId,
  TenantStatus,
  decodeEnsureRequest,
  encodeEnsureReply,
  encodeTenantRecord,
  tenantEditSubjects,
  tenantDeadLetterSubjects,
  cleanSubject,
  tenantSnapshotsPrefix,
  tenantSourceApi,
  tenantSourceDeliver,
  tenantStreamName,
  tenantUser,
  type TenantRecord,
} from '../../contracts/mod.ts'
import { readFileSync } from 'node:fs'
import type { BlobStore } from '../../runtime/blobs/blob-store.ts'
import { isJetStreamApiError, streamInfo } from '../../runtime/nats.ts'
import { natsFiles, reloadNats } from './nats-server.ts'
import { waitFor } from './proc.ts'
import type { NatsConfigOptions } from './nats-config.ts'
import { Registry, formatSize, parseSize } from './registry.ts'
import { deleteTenantSnapshotBlobs, eraseTenantRows, erasureSettleMs } from './tenant-erasure.ts'
import { AGG_SHARE_OF_SERVICE_QUOTA, aggMaxBytes, aggStreamConfig, feedStreamConfigs, tenantStreamConfig } from './stream-configs.ts'

/** How long after its commit core may still be publishing a commit's dead letters and cleaned events. */
const FEED_PUBLISH_SETTLE_MS = 1_000

export interface ProvisionerOptions {
  /** Folder of the nats-server (registry, config, pid). */
  natsDir: string
  natsUrl: string
  /** Needed to purge a removed tenant's rows and to count documents in `list`. */
  databaseUrl?: string
  /** The blob store core keeps snapshots in (same config as core's): `remove` deletes the tenant's. Not closed here. Default none. */
  blobs?: BlobStore
  /** Progress lines for long steps. */
  progress?: (line: string) => void
}

export interface TenantUsage extends TenantRecord {
  streamBytes: number
  streamMessages: number
  /** Messages of this tenant still in AGG. */
  aggMessages: number
  docs: number | null
}

/**
 * Adds, suspends, resumes, removes and lists tenants: the registry (→ accounts config → reload),
 * the tenant's stream in its own account, its source in AGG, and its record in the KV bucket
 * edges and core watch. Every step is idempotent, so a half-done run is finished by rerunning.
 */
export class Provisioner {
  private queue: Promise<unknown> = Promise.resolve()

  private constructor(
    private readonly o: ProvisionerOptions,
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly kv: KV,
    private readonly revocations: KV,
  ) {}

  /** Revokes one token, a user's tokens or a tenant's tokens issued until now; every edge closes their sockets. Throws for a tenant the registry does not know. */
  async revoke(r: Omit<z.input<typeof Revocation>, 'revokedAt'>): Promise<Revocation> {
    const revocation = Revocation.parse({ ...r, revokedAt: Date.now() })
    // A mistyped name would report success while the meant tenant's tokens stay valid.
    if (!this.registry.tenant(revocation.tenant)) throw new Error(`unknown tenant ${revocation.tenant}`)
    await this.revocations.put(revocationKey(revocation), encodeRevocation(revocation))
    return revocation
  }

  static async open(o: ProvisionerOptions): Promise<Provisioner> {
    const registry = Registry.open(natsFiles(o.natsDir).registry)
    const nc = await connect({ servers: o.natsUrl, user: ServiceUser.Admin, pass: registry.servicePassword(ServiceUser.Admin), name: 'docflow-provisioner' })
    const jsm = await jetstreamManager(nc)
    const kvm = new Kvm(nc)
    const kv = await kvm.create(TENANTS_BUCKET, { history: 1 })
    const revocations = await kvm.create(REVOCATIONS_BUCKET, { history: 1, ttl: REVOCATION_TTL_MS })
    return new Provisioner(o, nc, jsm, kv, revocations)
  }

  async close(): Promise<void> {
    await this.nc.drain()
  }

  /**
   * Dev only: answers edges that meet an unknown tenant by adding it with `maxStorageBytes`.
   * Requests run one at a time, since each rewrites the registry and reloads the server.
   */
  serveAutoProvisioning(maxStorageBytes: number, onError: (err: unknown, tenant: string) => void): Subscription {
    return this.nc.subscribe(TENANT_ENSURE_SUBJECT, {
      callback: (_err, msg) => {
        let tenant = '?'
        this.queue = this.queue.then(async () => {
          try {
            tenant = decodeEnsureRequest(msg.data).tenant
            msg.respond(encodeEnsureReply({ status: 'ok', record: await this.ensure(tenant, maxStorageBytes) }))
          } catch (err) {
            onError(err, tenant)
            msg.respond(encodeEnsureReply({ status: 'error', message: (err as Error).message }))
          }
        })
      },
    })
  }

  private get registry(): Registry {
    return Registry.open(natsFiles(this.o.natsDir).registry)
  }

  /** Makes streams, AGG sources and KV records match the registry (start-up, or after a crash mid-change). */
  async init(): Promise<void> {
    const registry = this.registry
    this.checkStorageBudget(registry)
    for (const [tenant] of registry.tenants()) await this.ensureTenantStream(tenant, registry)
    await this.ensureAggregate(registry.tenants().map(([t]) => t))
    await this.ensureFeeds()
    for (const [tenant] of registry.tenants()) await this.kv.put(tenant, encodeTenantRecord(registry.record(tenant)))
  }

  async add(tenant: string, maxStorageBytes: number): Promise<TenantRecord> {
    TenantId.parse(tenant)
    if (this.registry.tenant(tenant)) throw new Error(`tenant ${tenant} already exists`)
    const settleMs = this.o.databaseUrl ? await erasureSettleMs(this.o.databaseUrl, tenant) : 0
    if (settleMs > 0) {
      this.say(`adding tenant ${tenant}: removed moments ago; waiting ${settleMs} ms so that core does not take its first edits for ones ingested before the removal`)
      await new Promise((resolve) => setTimeout(resolve, settleMs))
    }
    // Read after every wait and saved before the next: a tenant another provisioner added
    // meanwhile (auto-provisioning, a second operator) stays in the registry.
    const registry = this.registry
    if (registry.tenant(tenant)) throw new Error(`tenant ${tenant} already exists`)
    registry.addTenant(tenant, maxStorageBytes)
    this.checkStorageBudget(registry)
    this.say(`adding tenant ${tenant}: account and quota`)
    registry.save()
    try {
      await this.reload()
    } catch (err) {
      // Left in the registry, a tenant nats-server refused would break every later reload and
      // the next start: put the registry and the config back as they were.
      registry.removeTenant(tenant)
      registry.save()
      await this.reload().catch((again: unknown) => this.say(`adding tenant ${tenant}: reloading without it failed too: ${(again as Error).message}`))
      throw err
    }
    this.say(`adding tenant ${tenant}: edit stream and aggregate source`)
    await this.ensureTenantStream(tenant, registry)
    await this.ensureAggregate(registry.tenants().map(([t]) => t))
    const record = registry.record(tenant)
    await this.kv.put(tenant, encodeTenantRecord(record))
    return record
  }

  /** Adds the tenant with `maxStorageBytes` unless it exists (dev auto-provisioning). */
  async ensure(tenant: string, maxStorageBytes: number): Promise<TenantRecord> {
    const existing = this.registry.tenant(tenant)
    return existing ? this.registry.record(tenant) : this.add(tenant, maxStorageBytes)
  }

  /** Suspended: data kept, ingest import removed (nothing can write), edges refuse its sockets. */
  async setStatus(tenant: string, status: TenantStatus): Promise<TenantRecord> {
    return this.change(tenant, { status })
  }

  async setQuota(tenant: string, maxStorageBytes: number): Promise<TenantRecord> {
    return this.change(tenant, { maxStorageBytes })
  }

  /**
   * Deletes the tenant everywhere its data was copied: AGG, its stream, KV, PostgreSQL, its
   * snapshot blobs, the account. PostgreSQL's rows go through the audited erasure (migrations 005
   * and 009: the op log and the deletion history refuse any other DELETE), which records `actor`
   * and `reason` in the erasures table. The registry entry goes last: until then a rerun after a
   * crash does every step again, and each finds what is left.
   */
  async remove(tenant: string, erasure: { actor?: string; reason?: string } = {}): Promise<void> {
    const registry = this.registry
    if (!registry.tenant(tenant)) throw new Error(`unknown tenant ${tenant}`)
    // First, so even a half-done removal refuses the tenant's tokens, and a tenant added later
    // under the same name never accepts them (revoke <tenant> writes the same entry).
    this.say(`removing tenant ${tenant}: revoking its tokens`)
    await this.revoke({ tenant, reason: erasure.reason ?? 'tenant removed' })
    this.say(`removing tenant ${tenant}: aggregate source`)
    await this.ensureAggregate(registry.tenants().map(([t]) => t).filter((t) => t !== tenant))
    // Purges do not propagate from a source (NATS-TENANCY pitfall 4): purge AGG explicitly.
    const purged = await this.jsm.streams.purge(AGG_STREAM, { filter: tenantEditSubjects(tenant) })
    this.say(`removing tenant ${tenant}: purged ${purged.purged} messages from ${AGG_STREAM}`)
    await this.withTenantAdmin(tenant, registry, async (jsm) => {
      try {
        await jsm.streams.delete(tenantStreamName(tenant))
      } catch (err) {
        if (!isJetStreamApiError(err, JetStreamApiCodes.StreamNotFound)) throw err
      }
    })
    await this.kv.purge(tenant)
    if (this.o.databaseUrl) {
      await eraseTenantRows(this.o.databaseUrl, tenant, erasure, (line) => this.say(`removing tenant ${tenant}: ${line}`))
      // After the rows: a snapshot row always names a blob whose put completed (core/snapshots.ts).
      if (this.o.blobs) await deleteTenantSnapshotBlobs(this.o.blobs, tenant, (line) => this.say(`removing tenant ${tenant}: ${line}`))
      else this.say(`removing tenant ${tenant}: no blob store, snapshot blobs under ${tenantSnapshotsPrefix(tenant)} left in place`)
    } else {
      // Without the rows gone, deleting the blobs would leave rows naming missing blobs.
      this.say(`removing tenant ${tenant}: no DATABASE_URL, PostgreSQL rows and snapshot blobs left in place`)
    }
    // After the rows: core publishes a commit's dead letters and cleaned events once it committed,
    // the commits in flight that the erasure waited for included; so again a moment later.
    await this.purgeFeeds(tenant)
    await new Promise((resolve) => setTimeout(resolve, FEED_PUBLISH_SETTLE_MS))
    await this.purgeFeeds(tenant)
    registry.removeTenant(tenant)
    registry.save()
    await this.reload()
  }

  /** Core's feeds: the tenant's dead letters hold updates' bytes, its cleaned events name its documents and users. */
  private async purgeFeeds(tenant: string): Promise<void> {
    for (const [stream, filter] of [[DLQ_STREAM, tenantDeadLetterSubjects(tenant)], [CLEAN_STREAM, cleanSubject(tenant)]] as const) {
      if (!(await streamInfo(this.jsm, stream))) continue
      const { purged } = await this.jsm.streams.purge(stream, { filter })
      if (purged > 0) this.say(`removing tenant ${tenant}: purged ${purged} messages from ${stream}`)
    }
  }

  async list(): Promise<TenantUsage[]> {
    const registry = this.registry
    const db = this.o.databaseUrl ? new pg.Client(this.o.databaseUrl) : null
    await db?.connect()
    try {
      const out: TenantUsage[] = []
      for (const [tenant] of registry.tenants()) {
        const stream = await this.withTenantAdmin(tenant, registry, (jsm) => streamInfo(jsm, tenantStreamName(tenant)))
        const agg = await streamInfo(this.jsm, AGG_STREAM, { subjects_filter: tenantEditSubjects(tenant) })
        const aggMessages = Object.values(agg?.state.subjects ?? {}).reduce((a, b) => a + b, 0)
        const docs = db ? Number((await db.query('SELECT count(*) AS n FROM docs WHERE tenant = $1', [tenant])).rows[0].n) : null
        out.push({ ...registry.record(tenant), streamBytes: stream?.state.bytes ?? 0, streamMessages: stream?.state.messages ?? 0, aggMessages, docs })
      }
      return out
    } finally {
      await db?.end()
    }
  }

  /**
   * Applies the registry to the running server, then waits until JetStream answers again: for a
   * moment after a reload the service account's JetStream reads as "not enabled".
   */
  private async reload(): Promise<void> {
    await reloadNats(this.o.natsDir)
    await waitFor('JetStream to answer after the reload', async () => (await this.jsm.getAccountInfo(), true), 15_000)
  }

  private async change(tenant: string, change: { status?: TenantStatus; maxStorageBytes?: number }): Promise<TenantRecord> {
    const registry = this.registry
    registry.setTenant(tenant, change)
    this.checkStorageBudget(registry)
    registry.save()
    await this.reload()
    const record = registry.record(tenant)
    await this.kv.put(tenant, encodeTenantRecord(record))
    return record
  }

  /**
   * nats-server reserves every account's JetStream quota out of its own max_file_store and
   * refuses the whole config when they do not fit (err 10047), so check before writing it.
   */
  private checkStorageBudget(registry: Registry): void {
    const server = this.serverOptions()
    const budget = parseSize(server.maxFileStore)
    const wanted = server.serviceMaxFileBytes + registry.tenants().reduce((sum, [, t]) => sum + t.maxStorageBytes, 0)
    if (wanted > budget) {
      throw new Error(`tenant quotas plus the service account need ${formatSize(wanted)} but nats-server offers ${formatSize(budget)} (max_file_store); lower a quota or raise the server's storage`)
    }
    const agg = this.aggregateCap(registry)
    const aggBudget = Math.floor(server.serviceMaxFileBytes * AGG_SHARE_OF_SERVICE_QUOTA)
    if (agg > aggBudget) {
      throw new Error(`AGG must hold a copy of every tenant stream: ${formatSize(agg)} for these quotas, but the service account allows it ${formatSize(aggBudget)} (${AGG_SHARE_OF_SERVICE_QUOTA * 100}% of its ${formatSize(server.serviceMaxFileBytes)} quota); lower a quota or raise the service account's quota`)
    }
  }

  private aggregateCap(registry: Registry): number {
    return aggMaxBytes(registry.tenants().map(([, t]) => t.maxStorageBytes))
  }

  private async ensureTenantStream(tenant: string, registry: Registry): Promise<void> {
    await this.withTenantAdmin(tenant, registry, async (jsm) => {
      const config = tenantStreamConfig(tenant)
      if (!(await streamInfo(jsm, config.name))) await jsm.streams.add(config)
    })
  }

  /**
   * Creates AGG or sets its sources to exactly `tenants`, with a byte cap that holds all of
   * them (AGG_BYTES_PER_TENANT_BYTE). The cap only grows: lowering it under what AGG holds
   * would discard the oldest messages, maybe before core read them.
   */
  private async ensureAggregate(tenants: string[]): Promise<void> {
    const sources: StreamSource[] = tenants.map((t) => ({ name: tenantStreamName(t), external: { api: tenantSourceApi(t), deliver: tenantSourceDeliver(t) } }))
    const cap = this.aggregateCap(this.registry)
    const existing = await streamInfo(this.jsm, AGG_STREAM)
    if (existing) {
      const current = existing.config.max_bytes
      await this.jsm.streams.update(AGG_STREAM, { sources, max_bytes: current < 0 ? current : Math.max(cap, current) })
      return
    }
    await this.jsm.streams.add(aggStreamConfig(sources, cap))
  }

  /**
   * Core's feeds in SVC, next to AGG (contracts/streams.ts): the dead-letter stream and the CLEAN
   * stream, created once, each capped at a share of the service account's quota (discard old:
   * the tables are the record). Core publishes to them after its commits.
   */
  private async ensureFeeds(): Promise<void> {
    for (const feed of feedStreamConfigs(this.serverOptions().serviceMaxFileBytes)) {
      if (!(await streamInfo(this.jsm, feed.name))) await this.jsm.streams.add(feed)
    }
  }

  private async withTenantAdmin<T>(tenant: string, registry: Registry, fn: (jsm: JetStreamManager) => Promise<T>): Promise<T> {
    const entry = registry.tenant(tenant)
    if (!entry) throw new Error(`unknown tenant ${tenant}`)
    const nc = await connect({ servers: this.o.natsUrl, user: tenantUser(tenant, 'admin'), pass: entry.passwords.admin, name: `docflow-provisioner-${tenant}` })
    try {
      return await fn(await jetstreamManager(nc))
    } finally {
      await nc.close()
    }
  }

  private serverOptions(): NatsConfigOptions {
    return JSON.parse(readFileSync(natsFiles(this.o.natsDir).options, 'utf8')) as NatsConfigOptions
  }

  private say(line: string): void {
    this.o.progress?.(line)
  }
}
