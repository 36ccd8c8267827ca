import type { NatsConnection } from '@nats-io/transport-node'
import { Kvm, KvWatchInclude, type KV, type KvWatchEntry } from '@nats-io/kv'
import type { QueuedIterator } from '@nats-io/nats-core'
import {
  TENANTS_BUCKET,
  TENANT_ENSURE_SUBJECT,
  TenantStatus,
  decodeEnsureReply,
  decodeTenantRecord,
  encodeEnsureRequest,
  type TenantRecord,
} from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'
import { TenantLookupError, isTenantLookupError } from './errors.ts'

export type Admission = { ok: true } | { ok: false; reason: string }

export interface TenantDirectoryOptions {
  /** Dev only: ask the provisioner to create a tenant seen for the first time. Default false. */
  autoProvision: boolean
  /** Wait for that provisioning. Default 15_000. */
  provisionTimeoutMs: number
  /** Wait for a tenant's KV record before refusing the socket with 1013. Default 2_000. */
  readTimeoutMs: number
  /** Pause before following the bucket again after the watch broke. Default 1_000. */
  watchRetryMs: number
}

/**
 * What this edge knows of tenants, from the KV bucket provisioning writes: whether a token's
 * tenant may connect, and a callback when one is suspended or removed (live sockets go).
 */
export class TenantDirectory {
  private readonly records = new Map<string, TenantRecord | null>()
  private watch: QueuedIterator<KvWatchEntry> | null = null
  private stopped = false
  private retryTimer: NodeJS.Timeout | undefined

  private constructor(
    private readonly nc: NatsConnection,
    private readonly kv: KV,
    private readonly opts: TenantDirectoryOptions,
    private readonly log: Logger,
  ) {}

  /** Binds to the bucket (waiting for provisioning to create it) and follows its changes. */
  static async open(nc: NatsConnection, opts: TenantDirectoryOptions, log: Logger, onRevoked: (tenant: string, reason: string) => void): Promise<TenantDirectory> {
    let kv: KV | null = null
    while (!kv) {
      try {
        kv = await new Kvm(nc).open(TENANTS_BUCKET)
        await kv.status()
      } catch (err) {
        kv = null
        log.warn({ err: (err as Error).message }, `waiting for the ${TENANTS_BUCKET} bucket (provisioning creates it)`)
        await new Promise((r) => setTimeout(r, 1_000))
      }
    }
    const dir = new TenantDirectory(nc, kv, opts, log)
    await dir.follow(onRevoked)
    return dir
  }

  stop(): void {
    this.stopped = true
    clearTimeout(this.retryTimer)
    this.watch?.stop()
  }

  /** Whether a socket of this tenant may open; throws TenantLookupError when the bucket does not answer in time. */
  async admit(tenant: string): Promise<Admission> {
    let record = this.records.has(tenant) ? this.records.get(tenant)! : await this.read(tenant)
    if (!record && this.opts.autoProvision) record = await this.provision(tenant)
    if (!record) return { ok: false, reason: `tenant ${tenant} is not provisioned` }
    if (record.status === TenantStatus.Suspended) return { ok: false, reason: `tenant ${tenant} is suspended` }
    return { ok: true }
  }

  private async read(tenant: string): Promise<TenantRecord | null> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TenantLookupError(`tenant ${tenant}: no answer from the ${TENANTS_BUCKET} bucket in ${this.opts.readTimeoutMs} ms`)), this.opts.readTimeoutMs)
    })
    const lookup = this.kv.get(tenant)
    let entry
    try {
      entry = await Promise.race([lookup, timeout])
    } catch (err) {
      // A lookup that fails after the timeout won must not become an unhandled rejection.
      lookup.catch((late: unknown) => this.log.debug({ err: late, tenant }, 'late tenant lookup failure'))
      throw isTenantLookupError(err) ? err : new TenantLookupError(`tenant ${tenant}: ${TENANTS_BUCKET} lookup failed`, { cause: err })
    } finally {
      clearTimeout(timer)
    }
    const record = entry && entry.operation === 'PUT' ? decodeTenantRecord(entry.value) : null
    this.records.set(tenant, record)
    return record
  }

  private async provision(tenant: string): Promise<TenantRecord | null> {
    try {
      const reply = decodeEnsureReply((await this.nc.request(TENANT_ENSURE_SUBJECT, encodeEnsureRequest({ tenant }), { timeout: this.opts.provisionTimeoutMs })).data)
      if (reply.status === 'error') throw new Error(reply.message)
      this.log.info({ tenant }, 'tenant auto-provisioned (dev mode)')
      this.records.set(tenant, reply.record)
      return reply.record
    } catch (err) {
      this.log.error({ err, tenant }, 'tenant auto-provisioning failed')
      return null
    }
  }

  /** Follows the bucket; a watch that breaks is logged and opened again (records are re-read on demand). */
  private async follow(onRevoked: (tenant: string, reason: string) => void): Promise<void> {
    const watch = await this.kv.watch({ include: KvWatchInclude.UpdatesOnly })
    this.watch = watch
    const refollow = (err: unknown) => {
      if (this.stopped) return
      this.log.error({ err }, `${TENANTS_BUCKET} watch broke; following it again`)
      this.records.clear()
      this.retryTimer = setTimeout(() => this.follow(onRevoked).catch(refollow), this.opts.watchRetryMs)
    }
    const loop = async () => {
      for await (const e of watch) {
        try {
          const record = e.operation === 'PUT' ? decodeTenantRecord(e.value) : null
          this.records.set(e.key, record)
          if (!record) onRevoked(e.key, `tenant ${e.key} was removed`)
          else if (record.status === TenantStatus.Suspended) onRevoked(e.key, `tenant ${e.key} is suspended`)
        } catch (err) {
          this.log.error({ err, key: e.key }, 'bad tenant record ignored')
        }
      }
    }
    loop().then(() => refollow(new Error('watch ended')), refollow)
  }
}
