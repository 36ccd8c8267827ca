import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import type { Server } from 'node:http'
import pg from 'pg'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import { ServiceSubjects, corePartitions, encodeCommittedNotice, type CommittedNotice } from '../contracts/mod.ts'
import type { TokenPolicy } from '../runtime/jwt.ts'
import type { Logger } from '../runtime/log.ts'
import { serveOps, type OpsServer } from '../runtime/ops-server.ts'
import { createCoreMetrics, type CoreMetrics } from './metrics.ts'
import { fixEditPartitions, migrate } from './migrate.ts'
import { createReadApi } from './read-api.ts'
import { MergedStates } from './merged-states.ts'
import { serveDocState } from './state-service.ts'
import { StreamMonitor } from './stream-monitor.ts'
import { waitForStream, type StreamHole } from './streams.ts'
import { CommittedMemory } from './committed-memory.ts'
import { TenantDirectory } from '../runtime/tenant-directory.ts'
import { Revocations } from '../runtime/revocations.ts'
import { PartitionWorker } from './worker.ts'
import { DEFAULT_LEASE_TIMING, LeaseHolder, type LeaseTiming } from './lease.ts'
import { LeaseProbe } from './lease-probe.ts'
import { PartitionBalance } from './balance.ts'
import type { BlobStore } from '../runtime/blobs/blob-store.ts'
import { Snapshots } from './snapshots.ts'
import { DEFAULT_DOC_CACHE_BYTES, DocCacheBudget } from './doc-cache.ts'
import { watchDocNotices } from './doc-notices.ts'
import { DEFAULT_ERASURE_POLL_MS, ErasureWatch } from './erasure-watch.ts'
import { SnapshotRetention } from './snapshot-retention.ts'
import { QualityFeeds } from './quality-feeds.ts'
import { DEFAULT_GAP_REPORT_AFTER_MS } from './gap-watch.ts'

/** Read-pool sessions core opens at start (of its 8): a cold load runs two queries at once. */
const READ_SESSIONS_AT_START = 4

export interface CoreOptions extends Partial<LeaseTiming> {
  /** Read API port; 0 picks a free one. Default 8081. */
  port: number
  /** Listen address. Default 0.0.0.0. */
  host: string
  /** Private port of /metrics and /healthz (runtime/ops-server.ts); 0 picks a free one. Default 9081. */
  opsPort: number
  /** Listen address of the ops port. Default 127.0.0.1 (0.0.0.0 inside a pod). */
  opsHost: string
  databaseUrl: string
  /** How client tokens are verified. */
  tokens: TokenPolicy
  /** Stream the partition consumers read (AGG; created by provisioning). */
  stream: string
  /** Partitions of the deployment (DOCFLOW_EDIT_PARTITIONS); the database keeps the count it was first used with. */
  editPartitions: number
  /** Most messages per partition per transaction. Default 512. */
  maxBatch: number
  /** A document's state is rewritten once this many ops gathered in the op log since the last. Default 256. */
  compactEveryOps: number
  /** Documents in memory per partition worker. Default 2_000. */
  maxDocs: number
  /** An update ingested this long after its event time counts as late (docflow_core_late_updates_total). Default 60_000. */
  lateAfterMs?: number
  /** JetStream redelivery delay for unacked messages. Default 30_000. */
  ackWaitMs: number
  /** Messages in flight per partition. Default 1_024. */
  maxAckPending: number
  /** Retry interval for partitions another core owns. Default 2_000. */
  leaseRetryMs: number
  /** Pause after a worker failure before resuming from its checkpoint. Default 1_000. */
  retryDelayMs: number
  /** How often stream usage and partition lag are sampled for metrics. Default 15_000. */
  monitorIntervalMs: number
  /** Where document snapshots go (runtime/blobs: a folder or S3). */
  blobs: BlobStore
  /** Least time between two snapshots of one document. Default SNAPSHOT_DEFAULTS. */
  snapshotIntervalMs?: number
  /** Most snapshots this process writes per second. Default SNAPSHOT_DEFAULTS. */
  snapshotsPerSecond?: number
  /** A document whose oldest uncompacted op is this old has its state written, new ops or not. Default 60_000 (DEFAULT_COMPACT_AFTER_MS). */
  compactAfterMs?: number
  /** Bytes the partition workers' document caches hold together; least recently used docs go past it. Default 256 MiB (DEFAULT_DOC_CACHE_BYTES). */
  maxDocCacheBytes?: number
  /** Snapshots older than this many days are deleted, the newest of each document kept (snapshot-retention.ts). Default 90. */
  snapshotRetentionDays?: number
  /** How often old snapshots are looked for. Default 3_600_000 (1 h). */
  snapshotPruneIntervalMs?: number
  /** Base URL of an edge's HTTP ingest that rollback updates go through (core/rollback.ts). Default none: rollback answers 503 (main.ts: CORE_EDGE_URL, default http://127.0.0.1:8080). */
  edgeUrl?: string
  /** Heavy reads (state?at=, history, blame, rollback) served at once; one tenant gets half. Default DEFAULT_MAX_HEAVY_READS (core/read-api.ts). */
  maxHeavyReads?: number
  /** Pending updates of a document that wait this long for missing clocks are reported as a sequence gap (gap-watch.ts). Default 30_000. */
  gapReportAfterMs?: number
  /** How often the erasures table is read for erasures whose notice this core missed (erasure-watch.ts). Default DEFAULT_ERASURE_POLL_MS. */
  erasurePollMs?: number
}

/** Merge consumers, the doc-state service for edges and the read API of one core process. */
export class Core {
  readonly metrics: CoreMetrics
  private readonly pool: pg.Pool
  private readonly workers: PartitionWorker[] = []
  private leaseProbe: LeaseProbe | null = null
  private leases: LeaseHolder | null = null
  private server: Server | null = null
  private stateSub: Subscription | null = null
  private readonly committed = new CommittedMemory()
  private committedSub: Subscription | null = null
  /** Runs while NATS is away: hands the partitions back once a lease has lived out (watchNats). */
  private natsAway: NodeJS.Timeout | undefined
  private monitor: StreamMonitor | null = null
  private tenants: TenantDirectory | null = null
  private revocations: Revocations | null = null
  private ops: OpsServer | null = null
  private ready = false
  private readonly snapshots: Snapshots
  /** GET /state's merged states (read API): dropped with a document's deletion or erasure. */
  private readonly mergedStates: MergedStates
  private readonly docCacheBudget: DocCacheBudget
  private readonly retention: SnapshotRetention
  private docNotices: Subscription | null = null
  private readonly erasures: ErasureWatch
  private feeds: QualityFeeds | null = null

  constructor(
    private readonly o: CoreOptions,
    private readonly nc: NatsConnection,
    private readonly log: Logger,
    metrics?: CoreMetrics,
  ) {
    this.metrics = metrics ?? createCoreMetrics()
    // Idle connections stay open (pg-pool closes them after 10 s by default): a cold load after a
    // quiet spell would otherwise wait for new PostgreSQL sessions (measured: first query on a
    // fresh connection 38 ms, on an open one 2 ms). At most `max` per core process.
    this.pool = new pg.Pool({ connectionString: o.databaseUrl, max: 8, idleTimeoutMillis: 0, application_name: 'docflow-core-read' })
    this.pool.on('error', (err) => log.warn({ error: err.message }, 'idle PostgreSQL connection failed'))
    this.docCacheBudget = new DocCacheBudget(o.maxDocCacheBytes ?? DEFAULT_DOC_CACHE_BYTES, { bytes: (delta) => this.metrics.docCacheBytes.inc(delta), evicted: () => this.metrics.docCacheEvictions.inc() })
    this.retention = new SnapshotRetention(o.blobs, this.pool, log, this.metrics, { ...(o.snapshotRetentionDays !== undefined ? { retentionDays: o.snapshotRetentionDays } : {}), ...(o.snapshotPruneIntervalMs !== undefined ? { pruneIntervalMs: o.snapshotPruneIntervalMs } : {}) })
    this.erasures = new ErasureWatch(this.pool, log, o.erasurePollMs ?? DEFAULT_ERASURE_POLL_MS, (tenant, docId) => this.erased(tenant, docId))
    this.mergedStates = new MergedStates(this.pool, this.metrics)
    this.snapshots = new Snapshots(o.blobs, this.pool, log, this.metrics, {
      ...(o.snapshotIntervalMs !== undefined ? { snapshotIntervalMs: o.snapshotIntervalMs } : {}),
      ...(o.snapshotsPerSecond !== undefined ? { maxPerSecond: o.snapshotsPerSecond } : {}),
    })
  }

  /** The ops port (/metrics, /healthz) once started. */
  get opsPort(): number {
    if (!this.ops) throw new Error('core not started')
    return this.ops.port
  }

  /** Migrates, waits for the stream, starts the workers and the read API; resolves with the port. */
  async start(): Promise<number> {
    const client = await this.pool.connect()
    try {
      const applied = await migrate(client)
      if (applied.length > 0) this.log.info({ applied }, 'migrations applied')
      await fixEditPartitions(client, this.o.editPartitions)
    } finally {
      client.release()
    }
    await this.openReadSessions()
    // Before any worker: an update waiting in AGG from before an erasure must find it known.
    await this.erasures.start()
    const jsm = await jetstreamManager(this.nc)
    await waitForStream(jsm, this.o.stream, () => this.log.warn({ stream: this.o.stream }, 'waiting for the aggregate stream; provision a tenant (npm run tenant -- add <name>)'))
    this.tenants = await TenantDirectory.open(this.nc, { watchRetryMs: this.o.retryDelayMs }, this.log)
    // Core holds no sockets to close on a revocation; the read API checks each request against the list.
    this.revocations = await Revocations.open(this.nc, this.o.retryDelayMs, this.log, () => {})
    const js = jetstream(this.nc)
    const feeds = new QualityFeeds(this.nc, this.pool, (t, d) => this.cachedDoc(t, d)?.doc, { gapReportAfterMs: this.o.gapReportAfterMs ?? DEFAULT_GAP_REPORT_AFTER_MS }, this.log, this.metrics)
    this.feeds = feeds
    feeds.start()
    const timing = { leaseTtlMs: this.o.leaseTtlMs ?? DEFAULT_LEASE_TIMING.leaseTtlMs, leaseRenewMs: this.o.leaseRenewMs ?? DEFAULT_LEASE_TIMING.leaseRenewMs }
    const leases = new LeaseHolder(this.o.databaseUrl, timing)
    this.leases = leases
    // Open before the first look, so this core counts itself among the live ones from the start.
    await leases.open()
    const balance = new PartitionBalance(this.o.editPartitions, this.log, this.metrics)
    this.watchNats(balance, leases, timing.leaseTtlMs)
    this.leaseProbe = new LeaseProbe({ databaseUrl: this.o.databaseUrl, leaseRetryMs: this.o.leaseRetryMs, ...timing, ownSession: () => leases.open(), onView: (view) => balance.update(view) }, this.log, this.metrics)
    for (const p of corePartitions(this.o.editPartitions)) {
      const onHoleCheck = (hole: StreamHole | null) => this.holeChecked(p.partition, hole)
      const worker = new PartitionWorker({ ...this.o, ...p, onHoleCheck, onCommitted: (byEdge) => this.tellEdges(byEdge), erasedAfter: (t, d, ingestTs) => this.erasures.erasedAfter(t, d, ingestTs), onCompacted: (states) => this.snapshots.offer(states), onFeeds: (f) => feeds.take(f), docCacheBudget: this.docCacheBudget }, js, jsm, leases, this.leaseProbe, balance, this.pool, this.log, this.metrics)
      this.workers.push(worker)
      worker.start()
    }
    this.leaseProbe.start()
    this.monitor = new StreamMonitor(this.nc, jsm, this.o.stream, this.workers, this.o.monitorIntervalMs, this.log, this.metrics)
    this.monitor.start()
    this.docNotices = watchDocNotices(this.nc, this.log, (notice) => this.forget(notice.tenant, notice.docId, notice.event))
    this.retention.start()
    this.stateSub = serveDocState(this.nc, this.pool, (t, d) => this.cachedDoc(t, d), this.log, this.metrics)
    this.committedSub = this.committed.serve(this.nc, this.log)
    const healthy = () => this.ready && !this.nc.isClosed()
    const tenants = this.tenants
    const revocations = this.revocations
    this.server = createReadApi({ tokens: this.o.tokens, healthy, tenantStatus: (t) => tenants.status(t), revoked: (claims) => revocations.revoked(claims), blobs: this.o.blobs, edgeUrl: this.o.edgeUrl ?? null, ...(this.o.maxHeavyReads ? { maxHeavyReads: this.o.maxHeavyReads } : {}) }, this.pool, this.log, this.metrics, this.mergedStates)
    this.server.listen(this.o.port, this.o.host)
    await once(this.server, 'listening')
    this.ops = await serveOps({ port: this.o.opsPort, host: this.o.opsHost, registry: this.metrics.registry, healthy })
    this.ready = true
    return (this.server.address() as AddressInfo).port
  }

  /**
   * Opens READ_SESSIONS_AT_START of the pool's connections before the first request needs them,
   * each having planned a read of the tables a load reads: a session's first query pays for its
   * catalog lookups, and a cold load (two queries at once) would otherwise open two sessions.
   */
  private async openReadSessions(): Promise<void> {
    const clients = await Promise.all(Array.from({ length: READ_SESSIONS_AT_START }, () => this.pool.connect()))
    try {
      await Promise.all(clients.map((c) => c.query('SELECT 1 FROM docs, op_log, doc_deletions LIMIT 0')))
    } finally {
      for (const c of clients) c.release()
    }
  }

  /** Stops the workers (each commits and acks what it holds), then the API and the pool. */
  async stop(): Promise<void> {
    this.ready = false
    clearTimeout(this.natsAway)
    this.monitor?.stop()
    this.tenants?.stop()
    this.revocations?.stop()
    this.stateSub?.unsubscribe()
    this.committedSub?.unsubscribe()
    this.docNotices?.unsubscribe()
    await this.erasures.stop()
    await this.retention.stop()
    await Promise.all(this.workers.map((w) => w.stop()))
    await this.feeds?.stop()
    await this.snapshots.flush()
    // The probe first: a look of it reopens the lease session (LeaseHolder.open).
    await this.leaseProbe?.close()
    await this.leases?.close()
    if (this.server) {
      this.server.closeAllConnections()
      await new Promise((r) => this.server!.close(r))
    }
    await this.ops?.close()
    await this.pool.end()
  }

  /** Tells each edge which of its messages are committed (best effort: a lost notice only delays a client's "saved"). */
  private tellEdges(byEdge: Map<string, CommittedNotice>): void {
    this.committed.remember(byEdge)
    for (const [edgeId, notice] of byEdge) {
      try {
        this.nc.publish(ServiceSubjects.committed(edgeId), encodeCommittedNotice(notice))
      } catch (err) {
        this.metrics.committedNoticeFailures.inc()
        this.log.warn({ err, edgeId }, 'committed notice not sent')
      }
    }
  }

  /**
   * NATS away longer than a lease lives: the partitions go to cores that reach it (balance.ts
   * streamReachable), within about two lease lives, as if this core had died. Once it is back, a
   * new lease session makes the others see a core join, so they give its share back.
   */
  private watchNats(balance: PartitionBalance, leases: LeaseHolder, awayMs: number): void {
    let handedBack = false
    void (async () => {
      for await (const status of this.nc.status()) {
        if (status.type === 'disconnect') {
          this.natsAway ??= setTimeout(() => {
            handedBack = true
            balance.streamReachable(false)
          }, awayMs)
        } else if (status.type === 'reconnect') {
          clearTimeout(this.natsAway)
          this.natsAway = undefined
          if (handedBack) await leases.restart()
          handedBack = false
          balance.streamReachable(true)
        }
      }
    })().catch((err: unknown) => this.log.error({ err }, 'NATS status watch ended'))
  }

  /** A partition whose stream lost uncommitted messages refuses to go on: loud log, counter, blocked gauge. */
  private holeChecked(partition: number, hole: StreamHole | null): void {
    this.metrics.partitionBlocked.set({ partition }, hole ? 1 : 0)
    if (!hole) return
    this.metrics.streamHoles.inc({ partition })
    this.log.error({ partition, ...hole }, 'the stream lost messages this partition has not committed; the partition stays stopped until an operator recovers them from the tenant streams')
  }

  /** A document was deleted or erased: no worker keeps it in memory (its next compaction would write it back). */
  private forget(tenant: string, docId: string, event: string): void {
    this.metrics.docsForgotten.inc({ event })
    this.snapshots.forget(tenant, docId)
    this.mergedStates.forget(tenant, docId)
    for (const w of this.workers) {
      w.forget(tenant, docId).catch((err: unknown) => this.log.error({ err, tenant, docId }, 'document not dropped from memory'))
    }
  }

  /** An erasure the table shows (its notice may have been missed): a document's, or a whole tenant's (its removal). */
  private erased(tenant: string, docId: string | null): void {
    if (docId !== null) return this.forget(tenant, docId, 'erasure-seen')
    this.snapshots.forget(tenant, null)
    this.mergedStates.forget(tenant, null)
    for (const w of this.workers) {
      w.forgetTenant(tenant).catch((err: unknown) => this.log.error({ err, tenant }, 'documents of a removed tenant not dropped from memory'))
    }
  }

  private cachedDoc(tenant: string, docId: string) {
    for (const w of this.workers) {
      const doc = w.cachedDoc(tenant, docId)
      if (doc) return doc
    }
    return undefined
  }
}
