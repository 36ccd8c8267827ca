import * as Y from 'yjs'
import { DeadLetterReason } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'
import type { CoreMetrics } from './metrics.ts'
import type { DeadLetterKey, DeadLetterRow } from './store.ts'

/** How long an update may wait in a document for missing clocks before the gap is reported: 30 s. */
export const DEFAULT_GAP_REPORT_AFTER_MS = 30_000

/** A committed document that holds pending structs after a batch, and the batch's first update that went pending in it. */
export interface PendingDoc {
  tenant: string
  docId: string
  /** Null when the batch added nothing pending (the doc came from the store with pending structs). */
  source: Omit<DeadLetterRow, 'reason'> | null
}

/** A touched document that holds no pending structs after a batch; `loadedPending`: it came from the store with some. */
export interface SettledDoc {
  tenant: string
  docId: string
  loadedPending?: boolean
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
  resolve: (row: DeadLetterKey) => Promise<void>
  /** A document's reports not resolved yet: made by an earlier process, for pending structs that came from the store. */
  openReports: (tenant: string, docId: string) => Promise<DeadLetterKey[]>
}

interface Watched {
  tenant: string
  docId: string
  since: number
  source: PendingDoc['source']
  /** Its reports: the one this process made, or the open ones an earlier process made. */
  reports: DeadLetterKey[]
  /** Settles once the reports are recorded or found (a resolution must not overtake them). */
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
 * dropped unreported: whoever loads it next sees its pending structs again and watches it, and
 * takes over the reports still open (a restart, a partition moving): it resolves them when the
 * gap fills, in that batch or later.
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
  observe(pending: PendingDoc[], settled: SettledDoc[]): void {
    for (const p of pending) {
      const key = JSON.stringify([p.tenant, p.docId])
      const w = this.watched.get(key)
      if (w) w.source ??= p.source
      else {
        const watched: Watched = { tenant: p.tenant, docId: p.docId, since: Date.now(), source: p.source, reports: [], recorded: Promise.resolve(), reported: false }
        this.watched.set(key, watched)
        if (!p.source) this.takeOver(key, watched)
      }
    }
    for (const s of settled) {
      const key = JSON.stringify([s.tenant, s.docId])
      const w = this.watched.get(key)
      if (w) this.clear(key, w, true)
      else if (s.loadedPending) this.resolveOpen(s.tenant, s.docId)
    }
  }

  /** A document that came pending from the store: the reports an earlier process left open are its own. */
  private takeOver(key: string, w: Watched): void {
    w.recorded = this.sinks.openReports(w.tenant, w.docId).then(
      (open) => {
        w.reports.push(...open)
        if (open.length === 0 || w.reported || this.watched.get(key) !== w) return
        w.reported = true
        this.metrics.docsWithSequenceGaps.inc({ tenant: w.tenant })
      },
      (err: unknown) => this.log.error({ err, tenant: w.tenant, docId: w.docId }, 'open sequence gap reports not read'),
    )
  }

  /** Filled in the batch that loaded it pending: what an earlier process reported is resolved. */
  private resolveOpen(tenant: string, docId: string): void {
    this.sinks
      .openReports(tenant, docId)
      .then((open) => Promise.all(open.map((r) => this.sinks.resolve(r))))
      .catch((err: unknown) => this.log.error({ err, tenant, docId }, 'sequence gap resolution not recorded'))
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
    const row = { ...w.source, reason: `${DeadLetterReason.SequenceGap}: ${what}; waiting ${waitedMs} ms` }
    w.reports.push(row)
    w.recorded = this.sinks.report(row).catch((err: unknown) => this.log.error({ err, tenant: w.tenant, docId: w.docId }, 'sequence gap report not recorded'))
  }

  private clear(key: string, w: Watched, filled: boolean): void {
    this.watched.delete(key)
    if (w.reported) this.metrics.docsWithSequenceGaps.dec({ tenant: w.tenant })
    if (!filled) return
    if (w.reported) this.log.info({ tenant: w.tenant, docId: w.docId, waitedMs: Date.now() - w.since }, 'sequence gap filled')
    // After the reports are recorded or found: an earlier process's may still be on their way here.
    w.recorded
      .then(() => Promise.all(w.reports.map((r) => this.sinks.resolve(r))))
      .catch((err: unknown) => this.log.error({ err, tenant: w.tenant, docId: w.docId }, 'sequence gap resolution not recorded'))
  }
}
