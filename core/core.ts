import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import type { Server } from 'node:http'
import pg from 'pg'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import { corePartitions } from '../contracts/mod.ts'
import type { TokenPolicy } from '../runtime/jwt.ts'
import type { Logger } from '../runtime/log.ts'
import { createCoreMetrics, type CoreMetrics } from './metrics.ts'
import { migrate } from './migrate.ts'
import { createReadApi } from './read-api.ts'
import { serveDocState } from './state-service.ts'
import { StreamMonitor } from './stream-monitor.ts'
import { waitForStream } from './streams.ts'
import { PartitionWorker } from './worker.ts'

export interface CoreOptions {
  /** Read API port; 0 picks a free one. Default 8081. */
  port: number
  /** Listen address. Default 0.0.0.0. */
  host: string
  databaseUrl: string
  /** How client tokens are verified. */
  tokens: TokenPolicy
  /** Stream the partition consumers read (AGG; created by provisioning). */
  stream: string
  /** Most messages per transaction. Default 512. */
  maxBatch: number
  /** Documents in memory per partition worker. Default 2_000. */
  maxDocs: number
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
}

/** Merge consumers, the doc-state service for edges and the read API of one core process. */
export class Core {
  readonly metrics: CoreMetrics
  private readonly pool: pg.Pool
  private readonly workers: PartitionWorker[] = []
  private server: Server | null = null
  private stateSub: Subscription | null = null
  private monitor: StreamMonitor | null = null
  private ready = false

  constructor(
    private readonly o: CoreOptions,
    private readonly nc: NatsConnection,
    private readonly log: Logger,
    metrics?: CoreMetrics,
  ) {
    this.metrics = metrics ?? createCoreMetrics()
    this.pool = new pg.Pool({ connectionString: o.databaseUrl, max: 8, application_name: 'docflow-core-read' })
    this.pool.on('error', (err) => log.warn({ error: err.message }, 'idle PostgreSQL connection failed'))
  }

  /** Migrates, waits for the stream, starts the workers and the read API; resolves with the port. */
  async start(): Promise<number> {
    const client = await this.pool.connect()
    try {
      const applied = await migrate(client)
      if (applied.length > 0) this.log.info({ applied }, 'migrations applied')
    } finally {
      client.release()
    }
    const jsm = await jetstreamManager(this.nc)
    await waitForStream(jsm, this.o.stream, () => this.log.warn({ stream: this.o.stream }, 'waiting for the aggregate stream; provision a tenant (npm run tenant -- add <name>)'))
    const js = jetstream(this.nc)
    for (const p of corePartitions()) {
      const worker = new PartitionWorker({ ...this.o, ...p }, js, jsm, this.log, this.metrics)
      this.workers.push(worker)
      worker.start()
    }
    this.monitor = new StreamMonitor(jsm, this.o.stream, this.workers, this.o.monitorIntervalMs, this.log, this.metrics)
    this.monitor.start()
    this.stateSub = serveDocState(this.nc, this.pool, (t, d) => this.cachedDoc(t, d), this.log, this.metrics)
    this.server = createReadApi({ tokens: this.o.tokens, healthy: () => this.ready && !this.nc.isClosed() }, this.pool, this.log, this.metrics)
    this.server.listen(this.o.port, this.o.host)
    await once(this.server, 'listening')
    this.ready = true
    return (this.server.address() as AddressInfo).port
  }

  /** Stops the workers (each commits and acks what it holds), then the API and the pool. */
  async stop(): Promise<void> {
    this.ready = false
    this.monitor?.stop()
    this.stateSub?.unsubscribe()
    await Promise.all(this.workers.map((w) => w.stop()))
    if (this.server) {
      this.server.closeAllConnections()
      await new Promise((r) => this.server!.close(r))
    }
    await this.pool.end()
  }

  private cachedDoc(tenant: string, docId: string) {
    for (const w of this.workers) {
      const doc = w.cachedDoc(tenant, docId)
      if (doc) return doc
    }
    return undefined
  }
}
