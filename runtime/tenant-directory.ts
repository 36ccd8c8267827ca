import { Kvm, type KV, type KvWatchEntry } from '@nats-io/kv'
import type { QueuedIterator } from '@nats-io/nats-core'
import type { NatsConnection } from '@nats-io/transport-node'
import { TENANTS_BUCKET, TenantStatus, decodeTenantRecord, type TenantRecord } from '../contracts/mod.ts'
import type { Logger } from './log.ts'

export interface TenantDirectoryOptions {
  /** Pause before following the bucket again after its watch broke. Default 1_000. */
  watchRetryMs: number
  /** Called for every tenant whose entry arrives after the first full read: a change. */
  onChange?: (tenant: string, status: TenantReadStatus) => void
}

/** What the latest DF_TENANTS entry says of a tenant; `unavailable` while the bucket is not followed. */
export type TenantReadStatus = TenantStatus | 'removed' | 'unknown' | 'unavailable'

/**
 * What edge and core know of tenants, followed from the DF_TENANTS bucket provisioning writes
 * (one in-memory copy per process: admitting a socket or a read costs no NATS round trip). Invariant: a tenant whose latest entry is a suspension or a removal (the purge
 * marker provisioning leaves) is known as such as soon as the watch delivers it, and no
 * tenant is reported active while the bucket has not been read once or its watch is broken.
 * A tenant never provisioned is `unknown` (it has no documents to read).
 */
export class TenantDirectory {
  private readonly records = new Map<string, TenantRecord | 'removed'>()
  private watch: QueuedIterator<KvWatchEntry> | null = null
  private current = false
  private stopped = false
  private retryTimer: NodeJS.Timeout | undefined

  private constructor(
    private readonly kv: KV,
    private readonly o: TenantDirectoryOptions,
    private readonly log: Logger,
  ) {}

  /** Binds to the bucket (waiting for provisioning to create it) and resolves once every record is read. */
  static async open(nc: NatsConnection, o: TenantDirectoryOptions, log: Logger): Promise<TenantDirectory> {
    for (;;) {
      try {
        const kv = await new Kvm(nc).open(TENANTS_BUCKET)
        await kv.status()
        const dir = new TenantDirectory(kv, o, log)
        await dir.follow()
        return dir
      } catch (err) {
        log.warn({ err: (err as Error).message }, `waiting for the ${TENANTS_BUCKET} bucket (provisioning creates it)`)
        await new Promise((r) => setTimeout(r, o.watchRetryMs))
      }
    }
  }

  status(tenant: string): TenantReadStatus {
    return this.current ? this.recorded(tenant) : 'unavailable'
  }

  /** What the records say, current or not. */
  private recorded(tenant: string): Exclude<TenantReadStatus, 'unavailable'> {
    const record = this.records.get(tenant)
    if (record === undefined) return 'unknown'
    return record === 'removed' ? 'removed' : record.status
  }

  /** Takes a record this process just had provisioned, before the watch delivers it. */
  remember(record: TenantRecord): void {
    this.records.set(record.tenant, record)
  }

  stop(): void {
    this.stopped = true
    clearTimeout(this.retryTimer)
    this.watch?.stop()
  }

  /**
   * Reads every record, then follows changes. Rejects when the watch ends before the bucket
   * was read; a watch that breaks later refuses all tenants until it is followed again.
   */
  private async follow(): Promise<void> {
    let initialized!: () => void
    const ready = new Promise<void>((r) => (initialized = r))
    const before = new Map([...this.records.keys()].map((t) => [t, this.recorded(t)]))
    this.records.clear() // the watch replays each key's latest entry first
    // The last replayed entry is the first one marked isUpdate; an empty bucket replays nothing.
    const empty = (await this.kv.status()).values === 0
    const watch = await this.kv.watch()
    this.watch = watch
    if (empty) initialized()
    const loop = async () => {
      for await (const e of watch) {
        this.apply(e)
        if (this.current) this.changed(e.key)
        if (e.isUpdate) initialized()
      }
      throw new Error('watch ended')
    }
    const following = loop()
    await Promise.race([ready, following])
    this.current = true
    // Following again after a break: tell what changed while nobody was watching.
    for (const [tenant, status] of before) if (this.status(tenant) !== status) this.changed(tenant)
    following.catch((err: unknown) => {
      this.current = false
      if (this.stopped) return
      this.log.error({ err }, `${TENANTS_BUCKET} watch broke; refusing reads until it is followed again`)
      this.retryTimer = setTimeout(() => this.refollow(), this.o.watchRetryMs)
    })
  }

  private changed(tenant: string): void {
    try {
      this.o.onChange?.(tenant, this.status(tenant))
    } catch (err) {
      this.log.error({ err, tenant }, 'tenant change handler failed')
    }
  }

  private refollow(): void {
    this.follow().catch((err: unknown) => {
      this.log.error({ err }, `${TENANTS_BUCKET} watch could not be opened; retrying`)
      if (!this.stopped) this.retryTimer = setTimeout(() => this.refollow(), this.o.watchRetryMs)
    })
  }

  private apply(e: KvWatchEntry): void {
    if (e.operation !== 'PUT') {
      this.records.set(e.key, 'removed')
      return
    }
    try {
      this.records.set(e.key, decodeTenantRecord(e.value))
    } catch (err) {
      this.records.set(e.key, { tenant: e.key, status: TenantStatus.Suspended, maxStorageBytes: 1, createdAt: '' })
      this.log.error({ err, key: e.key }, 'bad tenant record: that tenant is refused as if suspended')
    }
  }
}
