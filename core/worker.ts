import * as Y from 'yjs'
import type { ConsumerMessages, JetStreamClient, JetStreamManager, JsMsg } from '@nats-io/jetstream'
import { decodeEnvelope, decodeFailureReason, editMsgId, parseEditSubject } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'
import { applyTracked } from './apply.ts'
import { DocCache, type CachedDoc } from './doc-cache.ts'
import { PartitionLease } from './lease.ts'
import type { CoreMetrics } from './metrics.ts'
import { commitBatch, readCheckpoint, readDocState, type DeadLetterRow, type DocRow, type OpRow } from './store.ts'
import { resetConsumer, type PartitionConsumer } from './streams.ts'

export interface WorkerOptions extends PartitionConsumer {
  partition: number
  databaseUrl: string
  /** Most messages committed in one transaction. Default 512. */
  maxBatch: number
  /** Documents kept in memory by this worker. Default 2_000. */
  maxDocs: number
  /** Wait between attempts to take the lease while another process holds it. Default 2_000. */
  leaseRetryMs: number
  /** Wait after a failure before resuming from the checkpoint. Default 1_000. */
  retryDelayMs: number
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/**
 * Owns one partition while it holds the lease: reads it in stream order and commits each
 * batch (ops, states, checkpoint) in one transaction before acking. Any failure drops the
 * in-memory docs and resumes from the committed checkpoint, so nothing is applied twice.
 */
export class PartitionWorker {
  private lease: PartitionLease | null = null
  private messages: ConsumerMessages | null = null
  private readonly queue: JsMsg[] = []
  private readonly cache: DocCache
  private checkpoint = 0
  private processing: Promise<void> | null = null
  private stopped = false
  private running: Promise<void> | null = null
  private wake: (() => void) | null = null

  constructor(
    private readonly o: WorkerOptions,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly log: Logger,
    private readonly metrics: CoreMetrics,
  ) {
    this.cache = new DocCache(o.maxDocs)
  }

  get owned(): boolean {
    return this.lease !== null
  }

  get partition(): number {
    return this.o.partition
  }

  get durable(): string {
    return this.o.durable
  }

  /** The in-memory doc, when this worker has it (it may hold updates not yet committed). */
  cachedDoc(tenant: string, docId: string): Y.Doc | undefined {
    return this.cache.get(tenant, docId)?.doc
  }

  start(): void {
    this.running = this.run()
  }

  /** Stops pulling, finishes and commits the batch in hand, releases the lease. */
  async stop(): Promise<void> {
    this.stopped = true
    this.wake?.()
    this.messages?.stop()
    await this.running
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        if (!this.lease) {
          this.lease = await PartitionLease.tryAcquire(this.o.databaseUrl, this.o.partition)
          if (!this.lease) {
            await this.pause(this.o.leaseRetryMs)
            continue
          }
          this.metrics.leasesHeld.inc()
        }
        await this.consume(this.lease)
      } catch (err) {
        if (!this.stopped) {
          this.metrics.workerErrors.inc({ partition: this.o.partition })
          this.log.error({ err, partition: this.o.partition }, 'partition worker failed; resuming from checkpoint')
        }
      }
      this.messages?.stop()
      this.messages = null
      await this.processing
      this.queue.length = 0
      this.cache.clear()
      if (this.lease && (this.lease.isLost || this.stopped)) await this.dropLease()
      if (!this.stopped) await this.pause(this.o.retryDelayMs)
    }
  }

  /** Consumes from the checkpoint until stopped or a batch fails. */
  private async consume(lease: PartitionLease): Promise<void> {
    this.checkpoint = await readCheckpoint(lease.client, this.consumerKey)
    await resetConsumer(this.jsm, this.o, this.checkpoint + 1)
    const consumer = await this.js.consumers.get(this.o.stream, this.o.durable)
    let fail: (err: unknown) => void = () => undefined
    const failed = new Promise<never>((_, reject) => (fail = reject))
    this.messages = await consumer.consume({
      max_messages: this.o.maxAckPending,
      callback: (msg) => {
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
    this.log.info({ partition: this.o.partition, fromSeq: this.checkpoint + 1 }, 'partition owned')
    const ended = this.messages.closed().then((err) => {
      if (err && !this.stopped) throw err
    })
    await Promise.race([ended, failed])
    await this.processing
  }

  private async drain(lease: PartitionLease): Promise<void> {
    while (this.queue.length > 0) {
      lease.check()
      await this.processBatch(lease, this.queue.splice(0, this.o.maxBatch))
    }
  }

  private async processBatch(lease: PartitionLease, msgs: JsMsg[]): Promise<void> {
    const ops: OpRow[] = []
    const deadLetters: DeadLetterRow[] = []
    const touched = new Map<CachedDoc, DocRow>()
    let lastSeq = this.checkpoint
    for (const msg of msgs) {
      if (msg.seq <= this.checkpoint) {
        this.metrics.updates.inc({ outcome: 'redelivered' })
        continue
      }
      lastSeq = Math.max(lastSeq, msg.seq)
      let edit
      try {
        const subject = parseEditSubject(msg.subject)
        edit = decodeEnvelope(msg.data)
        if (edit.tenant !== subject.tenant || edit.docId !== subject.docId) throw new Error('envelope tenant/doc differ from the subject')
        Y.decodeUpdate(edit.update)
      } catch (err) {
        const reason = decodeFailureReason(err)
        deadLetters.push({ stream: this.o.stream, streamSeq: msg.seq, subject: msg.subject, tenant: edit?.tenant ?? null, docId: edit?.docId ?? null, reason, payload: msg.data })
        this.metrics.deadLetters.inc({ reason: reason.split(':')[0] })
        continue
      }
      const cached = this.cache.get(edit.tenant, edit.docId) ?? this.cache.add(edit.tenant, edit.docId, await readDocState(lease.client, edit.tenant, edit.docId))
      const outcome = applyTracked(cached.doc, edit.update)
      this.metrics.updates.inc({ outcome })
      if (outcome === 'duplicate') continue
      ops.push({ tenant: edit.tenant, docId: edit.docId, streamSeq: msg.seq, msgId: editMsgId(edit.tenant, edit.docId, edit.update), userId: edit.userId, edgeId: edit.edgeId, update: edit.update, status: outcome, ingestTs: edit.ingestTs })
      const row = touched.get(cached) ?? { tenant: edit.tenant, docId: edit.docId, state: new Uint8Array(), stateVector: new Uint8Array(), lastStreamSeq: 0, ops: 0 }
      row.lastStreamSeq = msg.seq
      row.ops += 1
      touched.set(cached, row)
    }
    for (const [cached, row] of touched) {
      row.state = Y.encodeStateAsUpdate(cached.doc)
      row.stateVector = Y.encodeStateVector(cached.doc)
    }
    if (lastSeq > this.checkpoint) {
      const started = performance.now()
      try {
        await commitBatch(lease.client, { consumer: this.consumerKey, streamSeq: lastSeq, ops, docs: [...touched.values()], deadLetters })
      } catch (err) {
        for (const cached of touched.keys()) this.cache.evict(cached.tenant, cached.docId)
        throw err
      }
      const committedAt = Date.now()
      this.checkpoint = lastSeq
      this.metrics.commitSeconds.observe((performance.now() - started) / 1000)
      this.metrics.batches.inc()
      this.metrics.batchSize.observe(msgs.length)
      for (const op of ops) this.metrics.ingestToCommitSeconds.observe((committedAt - op.ingestTs) / 1000)
    }
    for (const msg of msgs) msg.ack()
  }

  private get consumerKey(): string {
    return `${this.o.stream}/${this.o.durable}`
  }

  private async dropLease(): Promise<void> {
    const lease = this.lease
    this.lease = null
    this.metrics.leasesHeld.dec()
    try {
      await lease?.release()
    } catch (err) {
      this.log.warn({ err, partition: this.o.partition }, 'lease release failed (session already gone)')
    }
  }

  private pause(ms: number): Promise<void> {
    return Promise.race([
      sleep(ms),
      new Promise<void>((r) => {
        this.wake = r
      }),
    ])
  }
}
