import { randomBytes } from 'node:crypto'
import { headers, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node'
import {
  JS_ACCOUNT_RESOURCES_EXCEEDED,
  MAX_BATCH_UPDATES,
  editBatchMsgId,
  MSG_ID_HEADER,
  SAVED_NOTICE_HEADER,
  editBatchSubject,
  editPartitionOf,
  DEFAULT_EDIT_PARTITIONS,
  encodeBatch,
} from '../contracts/mod.ts'
import { inboxPrefixOf } from '../runtime/nats.ts'
import type { Logger } from '../runtime/log.ts'
import type { EdgeMetrics } from './metrics.ts'
import { PublishError } from './errors.ts'
import { BATCH_FRAMING_BYTES, UPDATE_FRAMING_BYTES, batchBytesLimit, isPayloadTooLarge, payloadLimit } from './batch-bytes.ts'
import { takeBatch, takeQueuedOf, type Batch, type Lane, type PublishedRef } from './publish-lanes.ts'

export interface PublisherOptions {
  /** Partitions of the deployment (DOCFLOW_EDIT_PARTITIONS): one lane per tenant and partition. Default DEFAULT_EDIT_PARTITIONS. */
  partitions: number
  /** Per-attempt JetStream ack timeout. Default 2_000. */
  ackTimeoutMs: number
  /** Attempts on timeout / no responders, while connected, before giving up; the batch's msg id makes retries safe. Default 5. */
  attempts: number
  /**
   * Longest an update waits for company before its lane publishes, while the edge is busy (a
   * lane with `batchTarget` updates goes sooner; below `busyUpdatesPerS` at the next 5 ms tick).
   * Longer: fewer, fuller messages — less CPU in nats-server, edge and core per update; it bounds
   * the fanout latency batching adds. 0 = the next turn of the event loop. Default 15: at 2,500
   * and 4,000 typed ops/s its server CPU measured as 30 did (within the runs' noise), and it
   * halves what batching adds to ingest → materialized and fanout at P95.
   */
  lingerMs: number
  /** Updates that make a lane publish without waiting out `lingerMs`. Default 24. */
  batchTarget: number
  /**
   * Below this many updates per second lanes do not linger (updates go at the next 5 ms tick):
   * an idle edge saves little by batching, and a lone typist's co-editors see the edit sooner.
   * Counted in updates taken, not messages sent: lingering lowers the message rate, so a
   * threshold on messages switched lingering off as soon as it worked. Default 500.
   */
  busyUpdatesPerS: number
  /** Most updates in one stream message. Default 512 (at most MAX_BATCH_UPDATES). */
  maxBatchUpdates: number
  /** Most bytes of updates in one stream message (one larger update still goes alone). Default 1 MiB, capped by max_payload. */
  maxBatchBytes: number
}

export const PUBLISHER_DEFAULTS = { partitions: DEFAULT_EDIT_PARTITIONS, ackTimeoutMs: 2_000, attempts: 5, lingerMs: 15, batchTarget: 24, busyUpdatesPerS: 500, maxBatchUpdates: 512, maxBatchBytes: 1024 * 1024 } as const

/** How often lingering lanes are looked at; lanes released together share one socket write. */
const LINGER_TICK_MS = 5
/** Over how long the publisher's update rate is measured (busyUpdatesPerS). */
const RATE_WINDOW_MS = 250
/** nats-server's status on a request nobody (no stream) answered. */
const NO_RESPONDERS = 503
/** After a no-responders status, the next attempt comes this much later (not at the ack deadline). */
const NO_RESPONDERS_RETRY_MS = 250
const utf8 = new TextDecoder()

/** The JetStream PubAck as nats-server sends it. */
interface PubAck {
  stream?: string
  seq?: number
  duplicate?: boolean
  error?: { code: number; err_code?: number; description?: string }
}

/**
 * Publishes client updates to the tenant's edit stream in batches and settles each update's
 * promise with the stream's ack. Invariants:
 * - one lane per (tenant, partition) with at most one batch in flight, so a document's updates
 *   are stored in the order they were published (a retry resends the same batch before anything
 *   later of that lane);
 * - a retry carries the same Nats-Msg-Id, so a batch is stored at most once within the dedup window;
 * - every update gets its own outcome (acked, or a PublishError of its kind): a refused batch
 *   costs only the writers in it;
 * - an outage alone never fails a batch: attempts count only while connected, and a reconnect
 *   resends every batch in flight. A failed edit comes back from its client in other bytes under
 *   another msg id (a resync's step 2), which dedup cannot match: a failed batch that JetStream
 *   stores after all logs its edits twice;
 * - a document's updates queued behind a batch that failed as unavailable fail with it: they
 *   build on what failed, and its room closes its clients, who resend all of it.
 * Requests are pipelined: one wildcard inbox subscription takes every PubAck and one interval
 * sweeps timeouts, instead of a request (timer, promise, inbox entry, Error) per update.
 */
export class UpdatePublisher {
  private readonly publisherId = randomBytes(6).toString('hex')
  private readonly replyPrefix: string
  private readonly lanes = new Map<string, Lane>()
  private readonly pending = new Map<string, Batch>()
  private readonly sub: Subscription
  private sweeper: NodeJS.Timeout | null = null
  /** Idle lanes with updates waiting for the shared linger to end. */
  private readonly lingering = new Set<Lane>()
  private linger: NodeJS.Timeout | NodeJS.Immediate | null = null
  /** Updates taken in the current rate window, and when the window started. */
  private windowUpdates = 0
  private windowStartMs = 0
  /** Updates per second in the last full window. */
  private updatesPerS = 0
  private batchCount = 0
  /**
   * False from a disconnect to the reconnect: no ack can come, and nats.js drops what is
   * published meanwhile when it dials again (it resets its outbound buffer on each dial).
   */
  private connected = true
  private closed = false
  private readonly opts: PublisherOptions

  constructor(
    private readonly nc: NatsConnection,
    private readonly edgeId: string,
    private readonly metrics: EdgeMetrics,
    private readonly log: Logger,
    opts: Partial<PublisherOptions> = {},
  ) {
    this.opts = { ...PUBLISHER_DEFAULTS, ...opts }
    if (!(this.opts.maxBatchUpdates >= 1 && this.opts.maxBatchUpdates <= MAX_BATCH_UPDATES)) throw new RangeError(`maxBatchUpdates must be 1..${MAX_BATCH_UPDATES}, got ${this.opts.maxBatchUpdates}`)
    if (!(this.opts.lingerMs >= 0)) throw new RangeError(`lingerMs must be >= 0, got ${this.opts.lingerMs}`)
    if (!(this.opts.batchTarget >= 1)) throw new RangeError(`batchTarget must be >= 1, got ${this.opts.batchTarget}`)
    this.replyPrefix = `${inboxPrefixOf(nc) ?? '_INBOX'}.${this.publisherId}.`
    this.sub = nc.subscribe(`${this.replyPrefix}*`, {
      callback: (err, msg) => {
        if (err) this.log.warn({ err }, 'publish ack subscription')
        else this.onAck(msg)
      },
    })
    void this.watchConnection().catch((err: unknown) => this.log.error({ err }, 'NATS status watch of the publisher ended; batches may fail during an outage'))
  }

  /** `savedNotice`: the sender wants the saved signal, so core is asked to say when the update's message is committed. */
  publish(tenant: string, docId: string, userId: string, update: Uint8Array, savedNotice = false, ingestTs = Date.now()): Promise<PublishedRef> {
    const bytes = update.byteLength + Buffer.byteLength(docId) + Buffer.byteLength(userId) + UPDATE_FRAMING_BYTES // msgpack writes UTF-8
    // The edge's frame limit keeps this from happening; a server with a smaller max_payload
    // (after a reconnect) must still cost only the writer, never the room.
    const limit = payloadLimit(this.nc)
    if (limit !== undefined && bytes + BATCH_FRAMING_BYTES > limit) {
      this.metrics.tooBigRejections.inc({ tenant })
      return Promise.reject(new PublishError(`update for ${tenant}/${docId} is ${update.byteLength} bytes; the server takes at most ${limit}`, 'too-big'))
    }
    const partition = editPartitionOf(docId, this.opts.partitions)
    const lane = this.lane(tenant, partition)
    this.countUpdate()
    return new Promise<PublishedRef>((resolve, reject) => {
      lane.queue.push({ docId, userId, update, ingestTs, bytes, queuedAtMs: Date.now(), savedNotice, resolve, reject })
      lane.queuedBytes += bytes
      this.schedule(lane)
    })
  }

  /** Stops taking acks; whatever is still pending fails as unavailable (its clients resync). */
  close(): void {
    this.closed = true
    if (this.linger) {
      clearTimeout(this.linger as NodeJS.Timeout)
      clearImmediate(this.linger as NodeJS.Immediate)
    }
    this.linger = null
    this.sub.unsubscribe()
    if (this.sweeper) clearInterval(this.sweeper)
    this.sweeper = null
    for (const batch of [...this.pending.values()]) this.fail(batch, 'unavailable', 'publisher closed')
    for (const lane of this.lanes.values()) {
      for (const u of lane.queue.splice(0)) u.reject(new PublishError(`update for ${lane.tenant}/${u.docId} not stored: publisher closed`, 'unavailable'))
      lane.queuedBytes = 0
    }
  }

  private lane(tenant: string, partition: number): Lane {
    const key = `${tenant}\0${partition}`
    let lane = this.lanes.get(key)
    if (!lane) {
      lane = { tenant, partition, queue: [], queuedBytes: 0, inFlight: null }
      this.lanes.set(key, lane)
    }
    return lane
  }

  /**
   * Sends now when the lane is idle and a batch is full; else the lane lingers for company until
   * it has `batchTarget` updates or its oldest has waited `lingerMs`. One timer for all lanes: the
   * lanes a tick releases publish together, which nats.js writes to the socket at once (a socket
   * write costs more than the publishes in it).
   */
  private schedule(lane: Lane): void {
    if (lane.inFlight) return // sent when the batch in flight settles
    if (lane.queue.length >= this.opts.maxBatchUpdates || lane.queuedBytes >= batchBytesLimit(this.nc, this.opts.maxBatchBytes)) {
      this.sendNext(lane)
      return
    }
    this.lingering.add(lane)
    this.armLinger()
  }

  private armLinger(): void {
    if (this.linger || this.lingering.size === 0) return
    const fire = () => {
      this.linger = null
      const now = Date.now()
      const busy = this.updatesPerS >= this.opts.busyUpdatesPerS
      for (const lane of [...this.lingering]) {
        const oldest = lane.queue[0]
        if (!busy || !oldest || lane.queue.length >= this.opts.batchTarget || now - oldest.queuedAtMs >= this.opts.lingerMs) this.sendNext(lane)
      }
      this.armLinger()
    }
    this.linger = this.opts.lingerMs === 0 ? setImmediate(fire) : setTimeout(fire, Math.min(LINGER_TICK_MS, this.opts.lingerMs))
  }

  /** Cuts the next batch off the lane's queue and sends it. */
  private sendNext(lane: Lane): void {
    this.lingering.delete(lane)
    if (lane.inFlight || lane.queue.length === 0) return
    const updates = takeBatch(lane, this.opts.maxBatchUpdates, batchBytesLimit(this.nc, this.opts.maxBatchBytes))
    const n = ++this.batchCount
    const payload = encodeBatch({
      v: 2,
      tenant: lane.tenant,
      partition: lane.partition,
      edgeId: this.edgeId,
      updates: updates.map(({ docId, userId, update, ingestTs }) => ({ docId, userId, update, ingestTs })),
    })
    const batch: Batch = { lane, token: String(n), msgId: editBatchMsgId(lane.tenant, this.publisherId, n), payload, updates, attempt: 0, deadline: 0 }
    lane.inFlight = batch
    this.pending.set(batch.token, batch)
    this.metrics.publishBatchUpdates.observe(updates.length)
    this.send(batch)
  }

  /** One attempt: publish with the batch's reply subject; the sweeper and the ack do the rest. */
  private send(batch: Batch): void {
    batch.attempt++
    batch.deadline = Date.now() + this.opts.ackTimeoutMs
    this.ensureSweeper()
    try {
      const h = headers()
      h.set(MSG_ID_HEADER, batch.msgId)
      if (batch.updates.some((u) => u.savedNotice)) h.set(SAVED_NOTICE_HEADER, '1')
      this.nc.publish(editBatchSubject(batch.lane.tenant, batch.lane.partition), batch.payload, { reply: this.replyPrefix + batch.token, headers: h })
    } catch (err) {
      // Closed or draining connection (retrying cannot help), or a payload the server's
      // max_payload no longer takes (only a lone update is its writer's fault).
      const tooBig = isPayloadTooLarge(err) && batch.updates.length === 1
      this.fail(batch, tooBig ? 'too-big' : 'unavailable', (err as Error).message, err)
    }
  }

  private onAck(msg: Msg): void {
    const batch = this.pending.get(msg.subject.slice(this.replyPrefix.length))
    if (!batch) return // a late ack of a batch already settled (a retry's twin): dedup stored it once
    if (msg.data.length === 0 && msg.headers?.code === NO_RESPONDERS) {
      // No stream took it (server restarting, stream away): the sweeper retries it soon.
      batch.deadline = Math.min(batch.deadline, Date.now() + NO_RESPONDERS_RETRY_MS)
      return
    }
    let ack: PubAck
    try {
      ack = JSON.parse(utf8.decode(msg.data)) as PubAck
    } catch (err) {
      this.log.warn({ err, msgId: batch.msgId }, 'unreadable publish ack; the batch is retried at its deadline')
      return
    }
    if (ack.error) {
      const quota = ack.error.err_code === JS_ACCOUNT_RESOURCES_EXCEEDED
      this.fail(batch, quota ? 'quota' : 'unavailable', ack.error.description ?? `JetStream error ${ack.error.code}`)
      return
    }
    this.settle(batch)
    const now = Date.now()
    for (const [item, u] of batch.updates.entries()) {
      this.metrics.publishSeconds.observe((now - u.ingestTs) / 1000)
      u.resolve({ msgId: batch.msgId, item })
    }
    if (ack.duplicate) this.metrics.updatesDuplicate.inc(batch.updates.length)
    else this.metrics.updatesPublished.inc(batch.updates.length)
  }

  /** Every update of the batch fails with `kind`, as unavailable with its documents' queued ones; the lane moves on. */
  private fail(batch: Batch, kind: PublishError['kind'], reason: string, cause?: unknown): void {
    const behind = kind === 'unavailable' ? takeQueuedOf(batch) : []
    this.settle(batch)
    const { tenant } = batch.lane
    const n = batch.updates.length + behind.length
    if (kind === 'quota') this.metrics.quotaRejections.inc({ tenant }, n)
    else if (kind === 'too-big') this.metrics.tooBigRejections.inc({ tenant }, n)
    else this.metrics.publishFailures.inc(n)
    for (const u of batch.updates) u.reject(new PublishError(`update for ${tenant}/${u.docId} not stored: ${reason}`, kind, { cause }))
    for (const u of behind) u.reject(new PublishError(`update for ${tenant}/${u.docId} not published: an earlier one of its document failed (${reason})`, kind, { cause }))
  }

  /** The batch leaves flight; what its lane gathered meanwhile goes with the next linger. */
  private settle(batch: Batch): void {
    this.pending.delete(batch.token)
    const { lane } = batch
    if (lane.inFlight === batch) lane.inFlight = null
    if (lane.queue.length > 0) this.schedule(lane)
  }

  private countUpdate(): void {
    const now = Date.now()
    if (now - this.windowStartMs >= RATE_WINDOW_MS) {
      // A window with nothing taken after a long pause counts as idle.
      this.updatesPerS = now - this.windowStartMs < 2 * RATE_WINDOW_MS ? (this.windowUpdates * 1000) / RATE_WINDOW_MS : 0
      this.windowStartMs = now
      this.windowUpdates = 0
    }
    this.windowUpdates++
  }

  private ensureSweeper(): void {
    if (this.sweeper) return
    const everyMs = Math.max(10, Math.min(250, Math.floor(this.opts.ackTimeoutMs / 4)))
    this.sweeper = setInterval(() => this.sweep(), everyMs)
  }

  /** Resends each batch past its deadline (same msg id) or fails it when out of attempts; neither while disconnected. */
  private sweep(): void {
    const now = Date.now()
    for (const batch of this.connected ? this.pending.values() : []) {
      if (batch.deadline > now) continue
      if (batch.attempt >= this.opts.attempts) this.fail(batch, 'unavailable', `no ack after ${batch.attempt} attempts of ${this.opts.ackTimeoutMs} ms`)
      else {
        this.metrics.publishRetries.inc()
        this.send(batch)
      }
    }
    if (this.pending.size === 0 && this.sweeper) {
      clearInterval(this.sweeper)
      this.sweeper = null
    }
  }

  /**
   * Tracks the connection. A batch in flight at a disconnect may be stored with its ack lost, or
   * lost: after the reconnect it goes again at once (same msg id, so stored once within the
   * dedup window) with a fresh attempt budget.
   */
  private async watchConnection(): Promise<void> {
    for await (const status of this.nc.status()) {
      if (this.closed) break
      if (status.type === 'disconnect') this.connected = false
      else if (status.type === 'reconnect') {
        this.connected = true
        for (const batch of [...this.pending.values()]) {
          batch.attempt = 0
          this.metrics.publishRetries.inc()
          this.send(batch)
        }
      }
    }
    // Closed for good: a resend throws, so the sweep fails what is still in flight.
    this.connected = true
  }
}
