import type { ConsumerMessages, JetStreamClient, JetStreamManager, JsMsg } from '@nats-io/jetstream'
import type pg from 'pg'
import type { Logger } from '../runtime/log.ts'
import { BatchBuilder, decodeMessage } from './batch.ts'
import { DeliveryRun, type Delivery } from './delivery-run.ts'
import { DocCache } from './doc-cache.ts'
import { DeliveryGapError, isLeaseLostError, isRefusedData } from './errors.ts'
import type { LeaseHolder, PartitionLease } from './lease.ts'
import type { LeaseProbe } from './lease-probe.ts'
import type { OwnedPartition, PartitionBalance } from './balance.ts'
import type { CoreMetrics } from './metrics.ts'
import { findCommitted, itemKey, readCheckpointRange, readDocParts } from './store.ts'
import { PartitionAcks } from './partition-acks.ts'
import { RefusedRows } from './refused-rows.ts'
import { committedByEdge, compactedStates } from './commit-outcomes.ts'
import { resetConsumer } from './streams.ts'
import type { WorkerOptions } from './worker-options.ts'

/**
 * Owns one partition while it holds the lease: reads it in stream order and commits each
 * batch (ops, states, dead letters, checkpoint) in one transaction — shared with the other
 * partitions' batches of the moment (lease.ts group commit) — before acking. Any failure
 * drops the in-memory docs and resumes from the committed checkpoint.
 *
 * The consumer never skips (checkpoint = C, highest committed stream sequence = M):
 * - every message of the partition with stream sequence <= C is committed (delivery-run.ts: C
 *   advances only over the contiguous run of this session's deliveries, never to the highest
 *   sequence seen), and a session starts its consumer at C + 1;
 * - a message is skipped only when PostgreSQL already holds it (its update in the op log or the
 *   message in dead_letters); messages at or below M — redeliveries, and what a previous owner
 *   committed past C — are looked up, anything above M cannot be committed yet;
 * - so a redelivery behind later committed messages, or a delivery lost in flight, is applied.
 *
 * An update whose op-log row PostgreSQL refuses to store is dead-lettered on the batch's retry
 * (refused-rows.ts), so it cannot stall the partition for every tenant in it.
 */
export class PartitionWorker implements OwnedPartition {
  private lease: PartitionLease | null = null
  /** Set when the balance asks for this partition back: the session ends, then the lease goes. */
  private handingBack = false
  /** Ends the current consumer session cleanly (set by consume). */
  private endSession: () => void = () => undefined
  private messages: ConsumerMessages | null = null
  private readonly queue: JsMsg[] = []
  private readonly cache: DocCache
  private run = new DeliveryRun(0)
  /** Highest stream sequence committed for this partition (by this or an earlier owner). */
  private maxCommitted = 0
  private processing: Promise<void> | null = null
  private stopped = false
  private readonly stopping = new AbortController()
  private running: Promise<void> | null = null
  /** Ends the current consumer session with an error (set by consume). */
  private failSession: (err: unknown) => void = () => undefined
  private gapTimer: NodeJS.Timeout | null = null
  private readonly acks = new PartitionAcks()
  private readonly refusedRows: RefusedRows

  constructor(
    private readonly options: WorkerOptions,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly leases: LeaseHolder,
    private readonly probe: LeaseProbe,
    private readonly balance: PartitionBalance,
    /** Reads: checkpoints, committed lookups, cold loads (commits go over the lease session). */
    private readonly db: pg.Pool,
    private readonly log: Logger,
    private readonly metrics: CoreMetrics,
  ) {
    this.refusedRows = new RefusedRows(db, log, options.partition)
    this.cache = new DocCache({ maxDocs: options.maxDocs, ...(options.docCacheBudget ? { budget: options.docCacheBudget } : {}), ...(options.compactAfterMs !== undefined ? { compactAfterMs: options.compactAfterMs } : {}) })
  }

  get owned(): boolean {
    return this.lease !== null
  }

  get partition(): number {
    return this.options.partition
  }

  get durable(): string {
    return this.options.durable
  }

  /**
   * Drops a document from memory (deleted or erased by an operator: core/erasure.ts) so no
   * compaction writes it back; resolves once the batch in hand, which may hold it, committed.
   */
  async forget(tenant: string, docId: string): Promise<void> {
    this.cache.forget(tenant, docId)
    await this.processing
    this.cache.evict(tenant, docId)
  }

  /** Tenant-wide erasure (its removal): drops every document of the tenant, as forget does one. */
  async forgetTenant(tenant: string): Promise<void> {
    for (const docId of this.cache.docIdsOf(tenant)) await this.forget(tenant, docId)
  }

  /** The in-memory doc, when this worker has it (it may hold updates not yet committed). */
  cachedDoc(tenant: string, docId: string) {
    return this.cache.get(tenant, docId)
  }

  start(): void {
    this.running = this.loop()
  }

  private newBatch(): BatchBuilder {
    const o = this.options
    return new BatchBuilder(o.stream, this.cache, (tenant, docId) => readDocParts(this.db, tenant, docId), this.metrics, o.compactEveryOps, o.lateAfterMs, o.erasedAfter)
  }

  /** Commits what is in hand, gives the lease up and waits again (balance.ts: a core joined). */
  handBack(): void {
    if (!this.lease || this.handingBack) return
    this.handingBack = true
    this.endSession()
  }

  /** Stops pulling, finishes and commits the batch in hand, releases the lease. */
  async stop(): Promise<void> {
    this.stopped = true
    this.stopping.abort()
    this.messages?.stop()
    await this.running
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      try {
        if (!this.lease) {
          await this.probe.untilFree(this.options.partition, this.stopping.signal)
          if (this.stopped) break
          if (!this.balance.reserve(this.probe.freeForMs(this.options.partition) > this.leases.timing.leaseTtlMs)) {
            await this.pause(this.options.leaseRetryMs)
            continue
          }
          let lease: PartitionLease | null = null
          try {
            lease = await this.leases.tryAcquire(this.options.partition)
            // Held before settle: settle hands it back at once when NATS went away meanwhile.
            if (lease) {
              this.lease = lease
              this.metrics.leasesHeld.inc()
            }
          } finally {
            this.balance.settle(lease ? this : null)
          }
          if (!this.lease) continue
        }
        await this.consume(this.lease)
      } catch (err) {
        if (!this.stopped) {
          if (err instanceof DeliveryGapError) this.metrics.deliveryGaps.inc()
          if (isLeaseLostError(err)) this.metrics.leasesLost.inc()
          this.metrics.workerErrors.inc({ partition: this.options.partition })
          this.log.error({ err, partition: this.options.partition }, 'partition worker failed; resuming from checkpoint')
        }
      }
      this.messages?.stop()
      this.messages = null
      if (this.gapTimer) clearTimeout(this.gapTimer)
      this.gapTimer = null
      await this.processing
      this.acks.endSession()
      this.queue.length = 0
      this.cache.clear()
      if (this.lease && (this.lease.isLost || this.stopped || this.handingBack)) await this.dropLease()
      if (!this.stopped) await this.pause(this.options.retryDelayMs)
    }
  }

  /** Consumes from the checkpoint until stopped or a batch fails. */
  private async consume(lease: PartitionLease): Promise<void> {
    const { checkpoint, maxSeq } = await readCheckpointRange(this.db, this.consumerKey)
    this.run = new DeliveryRun(checkpoint)
    this.maxCommitted = maxSeq
    await resetConsumer(this.jsm, this.options, checkpoint + 1)
    const consumer = await this.js.consumers.get(this.options.stream, this.options.durable)
    let fail: (err: unknown) => void = () => undefined
    const failed = new Promise<never>((_, reject) => (fail = reject))
    this.failSession = fail
    // Age compaction while no message comes to carry it (batch.ts docRows takes aged docs too).
    const aging = setInterval(() => this.compactAged(lease, fail), Math.max(MIN_AGE_CHECK_MS, Math.floor(this.cache.compactAfterMs / 4)))
    const handedBack = new Promise<void>((resolve) => (this.endSession = resolve))
    if (this.handingBack) this.endSession()
    // Deliveries after the session ended are left for the next session or owner: what is
    // queued by then is committed before the lease can go.
    let open = true
    this.messages = await consumer.consume({
      max_messages: this.options.maxAckPending,
      expires: PULL_EXPIRES_MS,
      callback: (msg) => {
        if (!open) return
        this.queue.push(msg)
        this.processing ??= this.drain(lease).then(
          () => {
            this.processing = null
          },
          (err: unknown) => {
            this.processing = null
            fail(err)
          },
        )
      },
    })
    // stop() may have run while we were setting up, when there was nothing to stop yet.
    if (this.stopped) this.messages.stop()
    this.log.info({ partition: this.options.partition, fromSeq: checkpoint + 1 }, 'partition owned')
    const ended = this.messages.closed().then((err) => {
      if (err && !this.stopped) throw err
    })
    const lost = lease.whenLost.then((err) => {
      throw err
    })
    try {
      await Promise.race([ended, failed, lost, handedBack])
    } finally {
      open = false
      clearInterval(aging)
    }
    await this.processing
  }

  private async drain(lease: PartitionLease): Promise<void> {
    while (this.queue.length > 0) {
      lease.check()
      await this.processBatch(lease, this.queue.splice(0, this.batchLength()))
    }
  }

  /** Commits the states of aged docs (an empty batch) when no batch is in hand, then drains what arrived meanwhile. */
  private compactAged(lease: PartitionLease, fail: (err: unknown) => void): void {
    if (this.processing || this.stopped || this.cache.aged(1).length === 0) return
    this.processing = (async () => {
      lease.check()
      const batch = this.newBatch()
      const docs = batch.docRows()
      const { through } = await lease.commit({ consumer: this.consumerKey, streamSeq: this.run.checkpoint, maxSeq: this.maxCommitted, ops: [], docs, deadLetters: [] })
      this.options.onCompacted?.(compactedStates(docs, [], through))
      batch.committed()
      this.metrics.ageCompactions.inc(docs.length)
      await this.drain(lease)
    })().then(
      () => {
        this.processing = null
      },
      (err: unknown) => {
        this.processing = null
        fail(err)
      },
    )
  }

  /**
   * Messages for the next batch: at most maxBatch, and no more than MAX_BATCH_BYTES of them (at
   * least one) — a message may carry hundreds of updates, and a backlog must not grow into one
   * statement that outlives the lease session's statement timeout, again at every retry.
   */
  private batchLength(): number {
    let bytes = 0
    let n = 0
    for (const m of this.queue) {
      if (n === this.options.maxBatch || (n > 0 && bytes + m.data.length > MAX_BATCH_BYTES)) break
      bytes += m.data.length
      n++
    }
    return n
  }

  private async processBatch(lease: PartitionLease, msgs: JsMsg[]): Promise<void> {
    const deliveries: Delivery[] = msgs.map((m) => ({ delivery: m.info.deliverySequence, streamSeq: m.seq }))
    const decoded = uniqueBySeq(msgs).flatMap((m) => decodeMessage(m, this.options.editPartitions))
    const maybeCommitted = decoded.filter((d) => d.msg.seq <= this.maxCommitted)
    const committed = await findCommitted(
      this.db,
      this.options.stream,
      maybeCommitted.map((d) => ({ streamSeq: d.msg.seq, item: d.item, op: 'msgId' in d ? { tenant: d.edit.tenant, docId: d.edit.docId, msgId: d.msgId } : undefined })),
    )
    const batch = this.newBatch()
    let maxSeq = this.maxCommitted
    try {
      for (const d of decoded) {
        maxSeq = Math.max(maxSeq, d.msg.seq)
        const refused = this.refusedRows.reason(d.msg.seq, d.item)
        if (committed.has(itemKey(d.msg.seq, d.item))) this.metrics.updates.inc({ outcome: 'redelivered' })
        else if ('failure' in d) batch.deadLetter(d.msg, d.item, d.edit, d.failure)
        // Without its envelope: the row keeps the subject's tenant and doc and the message's bytes, which PostgreSQL stores.
        else if (refused !== undefined) batch.deadLetter(d.msg, d.item, undefined, refused)
        else await batch.apply(d.msg, d.item, d.edit, d.msgId)
      }
      const checkpoint = this.run.peek(deliveries)
      if (!batch.empty || checkpoint > this.run.checkpoint || maxSeq > this.maxCommitted) {
        const started = performance.now()
        lease.check()
        const docs = batch.docRows()
        const { through, fenced } = await lease.commit({ consumer: this.consumerKey, streamSeq: checkpoint, maxSeq, ops: batch.ops, docs, deadLetters: batch.deadLetters })
        if (docs.length > 0) this.options.onCompacted?.(compactedStates(docs, batch.ops, through))
        batch.committed()
        for (const doc of batch.fencedOut(fenced, decoded)) this.cache.evict(doc.tenant, doc.docId)
        const committedAt = Date.now()
        this.metrics.commitSeconds.observe((performance.now() - started) / 1000)
        this.metrics.batches.inc()
        this.metrics.batchSize.observe(msgs.length)
        for (const op of batch.ops) this.metrics.ingestToCommitSeconds.observe((committedAt - op.ingestTs) / 1000)
      }
    } catch (err) {
      for (const cached of batch.touchedDocs) this.cache.evict(cached.tenant, cached.docId)
      if (isRefusedData(err) && batch.ops.length > 0) await this.refusedRows.learn(decoded, batch.ops)
      throw err
    } finally {
      this.cache.unpinAll()
    }
    this.refusedRows.settled(decoded)
    this.run.commit(deliveries)
    this.maxCommitted = maxSeq
    this.options.onCommitted?.(committedByEdge(decoded, batch.refused))
    this.options.onFeeds?.(batch.feeds())
    this.acks.committed(msgs, this.run.contiguousThrough)
    this.watchGap()
  }

  /**
   * A missing delivery holds the checkpoint back; if it has not arrived within deliveryGapMs
   * (a redelivery may fill it), the session restarts from the checkpoint, which delivers it again.
   */
  private watchGap(): void {
    if (this.run.missing === null || this.gapTimer) return
    const limitMs = this.options.deliveryGapMs ?? this.options.ackWaitMs
    this.gapTimer = setTimeout(() => {
      this.gapTimer = null
      const ageMs = this.run.gapAgeMs()
      if (ageMs >= limitMs) this.failSession(new DeliveryGapError(`delivery ${this.run.missing} missing for ${ageMs} ms; checkpoint held at ${this.run.checkpoint}`))
      else this.watchGap()
    }, Math.max(0, limitMs - this.run.gapAgeMs()))
  }

  private get consumerKey(): string {
    return `${this.options.stream}/${this.options.durable}`
  }

  private async dropLease(): Promise<void> {
    const lease = this.lease
    this.lease = null
    if (this.handingBack) this.log.info({ partition: this.options.partition }, 'partition handed back (over this core\'s fair share)')
    this.handingBack = false
    this.balance.released(this)
    this.metrics.leasesHeld.dec()
    try {
      await lease?.release()
    } catch (err) {
      this.log.warn({ err, partition: this.options.partition }, 'lease release failed (session already gone)')
    }
  }

  private pause(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer)
        this.stopping.signal.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      this.stopping.signal.addEventListener('abort', done)
    })
  }
}

/** Stream bytes one partition batch takes at most (about 5,000 typed characters). */
const MAX_BATCH_BYTES = 256 * 1024

/** Aged docs are looked for at least this far apart (a quarter of compactAfterMs otherwise). */
const MIN_AGE_CHECK_MS = 250
/**
 * Life of each pull request. nats.js also waits about this long (jittered 0.5-1.5x) before it
 * pulls again when its consumer check after a reconnect fails: at the default 30 s, a
 * nats-server slow for a few seconds after a restart left partitions idle 15-45 s more. Idle
 * pulls and their heartbeats cost nats-server a message per partition every few seconds.
 */
const PULL_EXPIRES_MS = 5_000

/** A message delivered twice into one batch (an ack-wait redelivery) is processed once. */
function uniqueBySeq(msgs: JsMsg[]): JsMsg[] {
  const seen = new Set<number>()
  return msgs.filter((m) => !seen.has(m.seq) && seen.add(m.seq))
}
