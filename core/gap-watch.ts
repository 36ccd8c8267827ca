import * as Y from 'yjs'
import { DeadLetterReason } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'
import type { CoreMetrics } from './metrics.ts'
import type { DeadLetterRow } from './store.ts'

/** How long an update may wait in a document for missing clocks before the gap is reported: 30 s. */
export const DEFAULT_GAP_REPORT_AFTER_MS = 30_000

/** A committed document that holds pending structs after a batch, and the batch's first update that went pending in it. */
export interface PendingDoc {
  tenant: string
  docId: string
  /** Null when the batch added nothing pending (the doc came from the store with pending structs). */
  source: Omit<DeadLetterRow, 'reason'> | null
}

export interface GapWatchOptions {
  /** Report a gap that has not filled after this long. Default DEFAULT_GAP_REPORT_AFTER_MS. */
  gapReportAfterMs: number
}

export interface GapSinks {
  /** The in-memory document of a worker of this process, if any holds it. */
  docOf: (tenant: string, docId: string) => Y.Doc | undefined
  /** Records a report (dead_letters row + dead-letter stream). */
  report: (row: DeadLetterRow) => Promise<void>
  /** Marks a report resolved: the gap filled. */
  resolve: (row: DeadLetterRow) => Promise<void>
}

interface Watched {
  tenant: string
  docId: string
  since: number
  source: PendingDoc['source']
  report: DeadLetterRow | null
  /** Settles once the report is recorded (a resolution must not overtake it). */
  recorded: Promise<void>
  /** The report went out: it counts in the gauge until cleared. */
  reported: boolean
}

/**
 * Sequence gaps: Yjs holds an update whose clocks start past what the document has seen from a
 * client (or that depends on such structs) as pending, and applies it once the missing clocks
 * arrive. That is normal for a moment (updates of one client reach core in order, but a client
 * may send a later one first after a reconnect); a gap that stays open past gapReportAfterMs is
 * reported per document: a log line (tenant, doc, client, the clock expected next), the
 * `sequence_gaps_total{tenant}` counter, the `docs_with_sequence_gaps{tenant}` gauge, and a
 * dead letter with reason sequence-gap (table and stream). Reporting only: the update stays in
 * the op log and in the document, and applies when the gap fills; the fill clears the report
 * (gauge down, row's resolved_at set).
 *
 * Invariant: a document counts in the gauge exactly while it is watched, reported and not
 * cleared. A document no worker of this process holds any more (evicted, partition moved) is
 * dropped unreported: whoever loads it next sees its pending structs again and watches it.
 */
export class SequenceGapWatch {
  private readonly watched = new Map<string, Watched>()
  private timer: NodeJS.Timeout | null = null

  constructor(
    private readonly options: GapWatchOptions,
    private readonly sinks: GapSinks,
    private readonly log: Logger,
    private readonly metrics: CoreMetrics,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.check(), Math.max(50, Math.min(1_000, this.options.gapReportAfterMs / 4)))
    this.timer.unref()
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = null
  }

  /** After a commit: the touched documents that hold pending structs, and those that do not any more. */
  observe(pending: PendingDoc[], settled: { tenant: string; docId: string }[]): void {
    for (const p of pending) {
      const key = JSON.stringify([p.tenant, p.docId])
      const w = this.watched.get(key)
      if (!w) this.watched.set(key, { tenant: p.tenant, docId: p.docId, since: Date.now(), source: p.source, report: null, recorded: Promise.resolve(), reported: false })
      else w.source ??= p.source
    }
    for (const s of settled) {
      const key = JSON.stringify([s.tenant, s.docId])
      const w = this.watched.get(key)
      if (w) this.clear(key, w, true)
    }
  }

  /** Reports what waited too long, clears what filled. */
  check(now = Date.now()): void {
    for (const [key, w] of this.watched) {
      const doc = this.sinks.docOf(w.tenant, w.docId)
      if (!doc) this.clear(key, w, false)
      else if (!doc.store.pendingStructs && !doc.store.pendingDs) this.clear(key, w, true)
      else if (!w.reported && now - w.since >= this.options.gapReportAfterMs) this.report(w, doc, now)
    }
  }

  private report(w: Watched, doc: Y.Doc, now: number): void {
    w.reported = true
    const clients = [...(doc.store.pendingStructs?.missing.keys() ?? [])].map((client) => ({ client, expectedClock: Y.getState(doc.store, client) }))
    const waitedMs = now - w.since
    this.metrics.sequenceGaps.inc({ tenant: w.tenant })
    this.metrics.docsWithSequenceGaps.inc({ tenant: w.tenant })
    this.log.warn({ tenant: w.tenant, docId: w.docId, clients, waitedMs, pendingDeletes: doc.store.pendingDs !== null, sourceSeq: w.source?.streamSeq }, 'sequence gap: updates wait for clocks that did not arrive')
    if (!w.source) return // came pending from the store: no update of this process's to name (logged and counted)
    const what = clients.map((c) => `client ${c.client} expected clock ${c.expectedClock}`).join(', ') || 'deletions of structs not seen'
    w.report = { ...w.source, reason: `${DeadLetterReason.SequenceGap}: ${what}; waiting ${waitedMs} ms` }
    const row = w.report
    w.recorded = this.sinks.report(row).catch((err: unknown) => this.log.error({ err, tenant: w.tenant, docId: w.docId }, 'sequence gap report not recorded'))
  }

  private clear(key: string, w: Watched, filled: boolean): void {
    this.watched.delete(key)
    if (!w.reported) return
    this.metrics.docsWithSequenceGaps.dec({ tenant: w.tenant })
    if (!filled) return
    this.log.info({ tenant: w.tenant, docId: w.docId, waitedMs: Date.now() - w.since }, 'sequence gap filled')
    const row = w.report
    if (row) w.recorded.then(() => this.sinks.resolve(row)).catch((err: unknown) => this.log.error({ err, tenant: w.tenant, docId: w.docId }, 'sequence gap resolution not recorded'))
  }
}
