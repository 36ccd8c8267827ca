import { Kvm, type KV } from '@nats-io/kv'
import type { NatsConnection } from '@nats-io/transport-node'
import { REVOCATIONS_BUCKET, decodeRevocation, revokes, type Claims, type Revocation } from '../contracts/mod.ts'
import type { Logger } from './log.ts'

/** The revocation list is not being followed (NATS away): tokens cannot be cleared. */
export class RevocationsUnavailableError extends Error {
  override name = 'RevocationsUnavailableError'
}

/**
 * The token revocations of REVOCATIONS_BUCKET, followed by watch (one in-memory copy per edge:
 * admitting a socket costs no round trip). Every entry, replayed or new, is told to `onRevoked`,
 * so sockets open when it arrives are closed (again after a broken watch is followed anew:
 * closing what an earlier revocation matches is idempotent). While the watch is broken,
 * `revoked` throws: a token cannot be shown not revoked.
 */
export class Revocations {
  private readonly list = new Map<string, Revocation>()
  private current = false
  private stopped = false
  private stopWatch: (() => void) | null = null
  private retryTimer: NodeJS.Timeout | undefined

  private constructor(
    private readonly kv: KV,
    private readonly retryMs: number,
    private readonly log: Logger,
    private readonly onRevoked: (r: Revocation) => void,
  ) {}

  /** Binds to the bucket (waiting for provisioning to create it) and resolves once every entry is read. */
  static async open(nc: NatsConnection, retryMs: number, log: Logger, onRevoked: (r: Revocation) => void): Promise<Revocations> {
    for (;;) {
      try {
        const kv = await new Kvm(nc).open(REVOCATIONS_BUCKET)
        const revocations = new Revocations(kv, retryMs, log, onRevoked)
        await revocations.follow()
        return revocations
      } catch (err) {
        log.warn({ err: (err as Error).message }, `waiting for the ${REVOCATIONS_BUCKET} bucket (provisioning creates it)`)
        await new Promise((r) => setTimeout(r, retryMs))
      }
    }
  }

  /** True when a revocation covers the token; throws RevocationsUnavailableError while not followed. */
  revoked(claims: Pick<Claims, 'tenant' | 'sub' | 'iat' | 'jti'>): boolean {
    if (!this.current) throw new RevocationsUnavailableError(`${REVOCATIONS_BUCKET} is not followed (NATS away?)`)
    for (const r of this.list.values()) if (revokes(r, claims)) return true
    return false
  }

  stop(): void {
    this.stopped = true
    clearTimeout(this.retryTimer)
    this.stopWatch?.()
  }

  private async follow(): Promise<void> {
    const empty = (await this.kv.status()).values === 0
    const watch = await this.kv.watch()
    this.stopWatch = () => watch.stop()
    let initialized!: () => void
    const ready = new Promise<void>((r) => (initialized = r))
    if (empty) initialized()
    const following = (async () => {
      for await (const e of watch) {
        if (e.operation === 'PUT') this.take(e.key, e.value)
        else this.list.delete(e.key)
        if (e.isUpdate) initialized() // the last replayed entry is the first marked isUpdate
      }
      throw new Error('watch ended')
    })()
    await Promise.race([ready, following])
    this.current = true
    following.catch((err: unknown) => {
      this.current = false
      if (this.stopped) return
      this.log.error({ err }, `${REVOCATIONS_BUCKET} watch broke; refusing new sockets until it is followed again`)
      this.retryTimer = setTimeout(() => this.refollow(), this.retryMs)
    })
  }

  private refollow(): void {
    this.follow().catch((err: unknown) => {
      this.log.error({ err }, `${REVOCATIONS_BUCKET} watch could not be opened; retrying`)
      if (!this.stopped) this.retryTimer = setTimeout(() => this.refollow(), this.retryMs)
    })
  }

  private take(key: string, value: Uint8Array): void {
    let r: Revocation
    try {
      r = decodeRevocation(value)
    } catch (err) {
      this.log.error({ err, key }, 'bad revocation entry ignored')
      return
    }
    this.list.set(key, r)
    try {
      this.onRevoked(r)
    } catch (err) {
      this.log.error({ err, key }, 'revocation handler failed')
    }
  }
}
