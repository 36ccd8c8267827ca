import { LIMIT_ANSWERS, Limit, type LimitAnswer } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'
import type { EdgeMetrics } from './metrics.ts'
import { EdgeOptionsError } from './errors.ts'
import { TokenBucket } from './token-bucket.ts'

/** Admission limits of an edge (contracts/limits.ts names them and their answers). A rate (…PerS) or userConnections of 0 turns its limit off. */
export interface EdgeLimits {
  /** Updates one socket may send per second, sustained. Default 50 (a fast typist sends ~15). */
  connectionUpdatesPerS: number
  /** Updates one socket may send in a burst. Default 500 (a reconnect's resend is one update). */
  connectionUpdateBurst: number
  /**
   * Sync step 1 and query-awareness frames one socket may send per second, sustained: each is a
   * few bytes that make the edge encode a reply (a state diff of the document, every presence
   * state of the room). Default 2 (a stock y-websocket client sends one sync step 1 per connect
   * and per `resyncInterval`, and no query-awareness).
   */
  connectionRequestsPerS: number
  /** Sync step 1 and query-awareness frames one socket may send in a burst. Default 10. */
  connectionRequestBurst: number
  /** How long a user whose socket update did not apply (4422) cannot connect to this edge; 0 turns it off. Default 10 s. */
  poisonedUserCooldownMs: number
  /** Frame bytes one socket may send per second, sustained. Default 1 MiB. */
  connectionBytesPerS: number
  /** Frame bytes one socket may send in a burst; never below the frame limit, so one largest frame passes. Also the most uWS reads of one message (connectionBurstBytes). Default 16 MiB. */
  connectionBytesBurst: number
  /** Updates one tenant may send per second across the deployment; each live edge takes an equal share. Default 25_000. */
  tenantUpdatesPerS: number
  /** Update bytes one tenant may send per second across the deployment, shared like the updates. Default 64 MiB. */
  tenantBytesPerS: number
  /** Sockets one user may hold on one edge. Default 64. */
  userConnections: number
  /** Connects (upgrades and HTTP ingest requests) per second from one IP address, sustained. Default 20. */
  ipConnectsPerS: number
  /** Connects from one IP address in a burst. Default 200 (an office behind one NAT opening its tabs). */
  ipConnectBurst: number
  /** Connects from one IP address waiting for their token check at once. Default 64. */
  ipPendingAdmissions: number
  /** Connects waiting for their token check on the whole edge. Default 4_096. */
  pendingAdmissions: number
  /** Bytes a socket or an HTTP ingest body may send before its token is checked: the socket is closed (1013), the body's reading pauses. Default 64 KiB. */
  unauthenticatedBodyBytes: number
  /** Size a document may grow to (its loaded state plus the updates since, as this edge counts them). Default 256 MiB. */
  maxDocumentBytes: number
}

export const LIMIT_DEFAULTS: EdgeLimits = {
  connectionUpdatesPerS: 50,
  connectionUpdateBurst: 500,
  connectionRequestsPerS: 2,
  connectionRequestBurst: 10,
  poisonedUserCooldownMs: 10_000,
  connectionBytesPerS: 1024 * 1024,
  connectionBytesBurst: 16 * 1024 * 1024,
  tenantUpdatesPerS: 25_000,
  tenantBytesPerS: 64 * 1024 * 1024,
  userConnections: 64,
  ipConnectsPerS: 20,
  ipConnectBurst: 200,
  ipPendingAdmissions: 64,
  pendingAdmissions: 4_096,
  unauthenticatedBodyBytes: 64 * 1024,
  maxDocumentBytes: 256 * 1024 * 1024,
}

/** The least a limit may be: a rate, the sockets per user or the cooldown may be 0 (off); a burst, cap or size of 0 would refuse everything. */
export function limitMin(name: keyof EdgeLimits): 0 | 1 {
  return name.endsWith('PerS') || name === 'userConnections' || name === 'poisonedUserCooldownMs' ? 0 : 1
}

/** Idle buckets (full again) are forgotten this often, so a spray of IPs or tenants cannot grow memory. */
const SWEEP_MS = 10_000
/** How long after a tenant was over its rate its new connects are refused (HTTP 429). */
const TENANT_COOLDOWN_MS = 1_000

/**
 * The most frame bytes one socket may send at once: its byte burst, never below the frame limit
 * (so one largest frame passes). It is also the most uWS reads of one message (maxPayloadLength),
 * holding its fragments until it completes: a larger message could never pass the socket's byte
 * budget, so uWS cuts it unread (1006) instead of pinning its bytes; one up to it that is above
 * the frame limit is read and refused with 4413, which a stock client does not resend.
 */
export function connectionBurstBytes(limits: EdgeLimits, frameLimitBytes: number): number {
  return Math.max(limits.connectionBytesBurst, frameLimitBytes)
}

/** One socket's own rates. */
export class ConnectionBudget {
  private readonly updates: TokenBucket
  private readonly requests: TokenBucket
  private readonly bytes: TokenBucket

  constructor(limits: EdgeLimits, frameLimitBytes: number) {
    this.updates = new TokenBucket(limits.connectionUpdatesPerS, limits.connectionUpdateBurst)
    this.requests = new TokenBucket(limits.connectionRequestsPerS, limits.connectionRequestBurst)
    this.bytes = new TokenBucket(limits.connectionBytesPerS, connectionBurstBytes(limits, frameLimitBytes))
  }

  /** The limit a frame of `bytes` passes, or null. */
  takeFrame(bytes: number): Limit | null {
    return this.bytes.take(bytes) ? null : Limit.ConnectionBytes
  }

  takeUpdate(): Limit | null {
    return this.updates.take(1) ? null : Limit.ConnectionUpdates
  }

  /** One sync step 1 or query-awareness frame: small to send, a whole encode to answer. */
  takeRequest(): Limit | null {
    return this.requests.take(1) ? null : Limit.ConnectionRequests
  }
}

/** One user of one tenant, as the per-user maps key it. */
const userKey = (tenant: string, userId: string) => `${tenant}\0${userId}`

/**
 * The edge-wide limits: per IP (connect rate, admissions pending), per tenant (update rate and
 * bytes, this edge's share of the deployment's) and per user (open sockets). Invariant: every
 * check either takes what it counts and returns null, or takes nothing and returns the limit
 * that refused; `refused` counts it with the tenant label and logs it once per refusal (the
 * caller then closes or answers once, so a flood costs one line per socket, not per frame).
 */
export class EdgeLimiter {
  readonly limits: EdgeLimits
  private readonly ipConnects = new Map<string, TokenBucket>()
  private readonly ipPending = new Map<string, number>()
  private pending = 0
  private readonly tenantUpdates = new Map<string, TokenBucket>()
  private readonly tenantBytes = new Map<string, TokenBucket>()
  private readonly userSockets = new Map<string, number>()
  /** When each tenant was last over its rate (performance.now() ms). */
  private readonly tenantRefusedAt = new Map<string, number>()
  /** When a socket of each user (userKey) last sent an update that did not apply. */
  private readonly poisonedAt = new Map<string, number>()
  /** Refusals since the last log line, per limit and who: one line per key per SWEEP_MS at most. */
  private readonly unlogged = new Map<string, number>()
  private readonly sweeper: NodeJS.Timeout

  constructor(
    limits: Partial<EdgeLimits> | undefined,
    /** Live edges of the deployment (this one included): a tenant's rate is shared by them. */
    private readonly liveEdges: () => number,
    /** The edge's frame limit: byte bursts never go below it, so one largest update can pass. */
    private readonly frameLimitBytes: number,
    private readonly metrics: EdgeMetrics,
    private readonly log: Logger,
  ) {
    this.limits = { ...LIMIT_DEFAULTS, ...limits }
    for (const [name, value] of Object.entries(this.limits) as [keyof EdgeLimits, number][]) {
      const min = limitMin(name)
      if (!Number.isFinite(value) || value < min) throw new EdgeOptionsError(`limit ${name} must be a number >= ${min}, got ${value}`)
    }
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS).unref()
  }

  stop(): void {
    clearInterval(this.sweeper)
  }

  /** A connect from `ip` that starts a token check; call `admitted(ip)` once the check is over. */
  startAdmission(ip: string): Limit | null {
    const perIp = this.ipPending.get(ip) ?? 0
    if (this.pending >= this.limits.pendingAdmissions || perIp >= this.limits.ipPendingAdmissions) return Limit.PendingAdmissions
    let bucket = this.ipConnects.get(ip)
    if (!bucket) this.ipConnects.set(ip, (bucket = new TokenBucket(this.limits.ipConnectsPerS, this.limits.ipConnectBurst)))
    if (!bucket.take(1)) return Limit.IpConnects
    this.pending++
    this.ipPending.set(ip, perIp + 1)
    return null
  }

  admitted(ip: string): void {
    this.pending--
    const perIp = (this.ipPending.get(ip) ?? 1) - 1
    if (perIp > 0) this.ipPending.set(ip, perIp)
    else this.ipPending.delete(ip)
  }

  /** An open socket of `userId`; `closedSocket` when it closes (only if this returned null). */
  openSocket(tenant: string, userId: string): Limit | null {
    const key = userKey(tenant, userId)
    const open = this.userSockets.get(key) ?? 0
    if (this.limits.userConnections > 0 && open >= this.limits.userConnections) return Limit.UserConnections
    this.userSockets.set(key, open + 1)
    return null
  }

  closedSocket(tenant: string, userId: string): void {
    const key = userKey(tenant, userId)
    const open = (this.userSockets.get(key) ?? 1) - 1
    if (open > 0) this.userSockets.set(key, open)
    else this.userSockets.delete(key)
  }

  /** One update of `bytes` from `tenant`, against this edge's share of the tenant's rates. */
  takeTenantUpdate(tenant: string, bytes: number): Limit | null {
    const share = Math.max(1, this.liveEdges())
    const updates = this.tenantBucket(this.tenantUpdates, tenant, this.limits.tenantUpdatesPerS / share)
    const bytesBucket = this.tenantBucket(this.tenantBytes, tenant, this.limits.tenantBytesPerS / share, this.frameLimitBytes)
    // A tenant over its count still spends the bytes: it is over either way.
    const over = !bytesBucket.take(bytes) ? Limit.TenantBytes : !updates.take(1) ? Limit.TenantUpdates : null
    if (over) this.tenantRefusedAt.set(tenant, performance.now())
    return over
  }

  /**
   * The limit a new connect of `tenant` meets while the tenant was over its rate within the
   * last second: refused before it opens, so the sockets just closed for the tenant's rate
   * back off instead of reconnecting and resyncing at once.
   */
  tenantCooling(tenant: string): Limit | null {
    const at = this.tenantRefusedAt.get(tenant)
    return at !== undefined && performance.now() - at < TENANT_COOLDOWN_MS ? Limit.TenantUpdates : null
  }

  /** A socket of `userId` sent an update that did not apply (it was closed with 4422). */
  poisoned(tenant: string, userId: string): void {
    this.poisonedAt.set(userKey(tenant, userId), performance.now())
  }

  /** The limit a new connect of a user meets within poisonedUserCooldownMs of its poisoned update. */
  userCooling(tenant: string, userId: string): Limit | null {
    const at = this.poisonedAt.get(userKey(tenant, userId))
    return at !== undefined && performance.now() - at < this.limits.poisonedUserCooldownMs ? Limit.PoisonedUser : null
  }

  /** Counts a refusal and logs it (the first per limit and tenant or IP in a sweep period, with the count since); returns its answer. */
  refused(limit: Limit, context: { tenant?: string; userId?: string; docId?: string; ip?: string }): LimitAnswer {
    this.metrics.limitRefusals.inc({ tenant: context.tenant ?? '', limit })
    const key = `${limit}\0${context.tenant ?? context.ip ?? ''}`
    const before = this.unlogged.get(key)
    if (before === undefined) this.log.warn({ ...context, limit }, 'limit reached; refused')
    this.unlogged.set(key, (before ?? 0) + 1)
    return LIMIT_ANSWERS[limit]
  }

  /** A tenant bucket at its share of the rate, one second of it as the burst (at least `minBurst`); rebuilt when the share moves. */
  private tenantBucket(buckets: Map<string, TokenBucket>, tenant: string, ratePerS: number, minBurst = 1): TokenBucket {
    const bucket = buckets.get(tenant)
    if (bucket && bucket.ratePerS === ratePerS) return bucket
    const fresh = new TokenBucket(ratePerS, Math.max(ratePerS, minBurst))
    buckets.set(tenant, fresh)
    return fresh
  }

  private sweep(): void {
    for (const [key, count] of this.unlogged) {
      const [limit, who] = key.split('\0')
      if (count > 1) this.log.warn({ limit, who, refusals: count - 1 }, 'limit still refusing')
    }
    this.unlogged.clear()
    const now = performance.now()
    for (const [tenant, at] of this.tenantRefusedAt) if (now - at >= TENANT_COOLDOWN_MS) this.tenantRefusedAt.delete(tenant)
    for (const [user, at] of this.poisonedAt) if (now - at >= this.limits.poisonedUserCooldownMs) this.poisonedAt.delete(user)
    for (const buckets of [this.ipConnects, this.tenantUpdates, this.tenantBytes]) {
      for (const [key, bucket] of buckets) if (bucket.full(now)) buckets.delete(key)
    }
  }
}
