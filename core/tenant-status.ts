import { Kvm, type KV, type KvWatchEntry } from '@nats-io/kv'
import type { QueuedIterator } from '@nats-io/nats-core'
import type { NatsConnection } from '@nats-io/transport-node'
import { TENANTS_BUCKET, TenantStatus, decodeTenantRecord, type TenantRecord } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'

export interface TenantStatusOptions {
  /** Pause before following the bucket again after its watch broke. Default 1_000. */
  watchRetryMs: number
}

/**
 * Which tenants core serves reads for, followed from the DF_TENANTS bucket provisioning
 * writes. Invariant: a tenant is served only while its latest record says active — a
 * suspended, removed or never provisioned tenant is refused, and so is every tenant while
 * the bucket has not been read once (start-up) or its watch is broken.
 */
export class TenantStatusDirectory {
  private readonly records = new Map<string, TenantRecord>()
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

  /** Whether reads of this tenant may be served now. */
  isActive(tenant: string): boolean {
    return this.current && this.records.get(tenant)?.status === TenantStatus.Active
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
      this.records.delete(e.key)
      return
    }
    try {
      this.records.set(e.key, decodeTenantRecord(e.value))
    } catch (err) {
      this.records.delete(e.key)
      this.log.error({ err, key: e.key }, 'bad tenant record: that tenant is refused')
    }
  }
}
