import { Kvm, type KV, type KvWatchEntry } from '@nats-io/kv'
import type { QueuedIterator } from '@nats-io/nats-core'
import type { NatsConnection } from '@nats-io/transport-node'
import { TENANTS_BUCKET, TenantStatus, decodeTenantRecord, type TenantRecord } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'

export interface TenantStatusOptions {
  /** Pause before following the bucket again after its watch broke. Default 1_000. */
  watchRetryMs: number
}

/** What the latest DF_TENANTS entry says of a tenant; `unavailable` while the bucket is not followed. */
export type TenantReadStatus = TenantStatus | 'removed' | 'unknown' | 'unavailable'

/**
 * Which tenants core serves reads for, followed from the DF_TENANTS bucket provisioning
 * writes. Invariant: a tenant whose latest entry is a suspension or a removal (the purge
 * marker provisioning leaves) is known as such as soon as the watch delivers it, and no
 * tenant is reported active while the bucket has not been read once or its watch is broken.
 * A tenant never provisioned is `unknown` (it has no documents to read).
 */
export class TenantStatusDirectory {
  private readonly records = new Map<string, TenantRecord | 'removed'>()
  private watch: QueuedIterator<KvWatchEntry> | null = null
  private current = false
  private stopped = false
  private retryTimer: NodeJS.Timeout | undefined

  private constructor(
    private readonly kv: KV,
    private readonly o: TenantStatusOptions,
    private readonly log: Logger,
  ) {}

  /** Binds to the bucket (waiting for provisioning to create it) and resolves once every record is read. */
  static async open(nc: NatsConnection, o: TenantStatusOptions, log: Logger): Promise<TenantStatusDirectory> {
    for (;;) {
      try {
        const kv = await new Kvm(nc).open(TENANTS_BUCKET)
        await kv.status()
        const dir = new TenantStatusDirectory(kv, o, log)
        await dir.follow()
        return dir
      } catch (err) {
        log.warn({ err: (err as Error).message }, `waiting for the ${TENANTS_BUCKET} bucket (provisioning creates it)`)
        await new Promise((r) => setTimeout(r, o.watchRetryMs))
      }
    }
  }

  status(tenant: string): TenantReadStatus {
    if (!this.current) return 'unavailable'
    const record = this.records.get(tenant)
    if (record === undefined) return 'unknown'
    return record === 'removed' ? 'removed' : record.status
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
    this.records.clear() // the watch replays each key's latest entry first
    // The last replayed entry is the first one marked isUpdate; an empty bucket replays nothing.
    const empty = (await this.kv.status()).values === 0
    const watch = await this.kv.watch()
    this.watch = watch
    if (empty) initialized()
    const loop = async () => {
      for await (const e of watch) {
        this.apply(e)
        if (e.isUpdate) initialized()
      }
      throw new Error('watch ended')
    }
    const following = loop()
    await Promise.race([ready, following])
    this.current = true
    following.catch((err: unknown) => {
      this.current = false
      if (this.stopped) return
      this.log.error({ err }, `${TENANTS_BUCKET} watch broke; refusing reads until it is followed again`)
      this.retryTimer = setTimeout(() => this.refollow(), this.o.watchRetryMs)
    })
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
