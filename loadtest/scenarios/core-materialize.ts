// Ingest → materialized at half of DocFlow's sustained maximum (issue 10's third benchmark): the
// typing storm at 50% of the highest rate DocFlow sustained (from this run's typing storms, or a
// probe storm at a saturating offered rate), with core's compaction running as always (every
// CORE_COMPACT_EVERY_OPS ops of a document) and snapshots as configured. Two figures:
// - core's own histogram docflow_core_ingest_to_commit_seconds (edge ingest → PostgreSQL commit,
//   per update; core/metrics.ts), read from core's ops port as the window opens and closes: the
//   share of updates at or under 50 ms is exact (a bucket bound), the percentiles are interpolated
//   within buckets the way Prometheus's histogram_quantile does;
// - the op log's committed_at − ingest_ts of the rows ingested in the window (exact percentiles;
//   committed_at is the committing transaction's start, so it runs a little under core's figure).
import type { RunningSystem } from '../systems.ts'
import { typingStorm, type TypingStormResult } from '../typing-storm.ts'

export const HISTOGRAM = 'docflow_core_ingest_to_commit_seconds'
/** Two stages of it: the edge's received → JetStream PubAck (its publish linger included), and core's hand-over to the group commit → committed. */
export const STAGE_HISTOGRAMS = { publish: 'docflow_edge_publish_seconds', commit: 'docflow_core_commit_seconds' } as const
/** The target bound: ingest → materialized P95 under this. */
export const MATERIALIZED_TARGET_MS = 50
/** A storm whose peers received less than this share of the offered rate saturated the box. */
export const SATURATED_BELOW = 0.95

/** Cumulative bucket counts of a histogram by upper bound in seconds (+Inf as Infinity). */
export type Buckets = Map<number, number>

/** A histogram's cumulative buckets (summed over label sets) from a Prometheus text page. */
export function parseBuckets(text: string, name: string): Buckets {
  const buckets: Buckets = new Map()
  const re = new RegExp(`^${name}_bucket\\{(?:[^}]*,)?le="([^"]+)"[^}]*\\}\\s+(\\S+)`)
  for (const line of text.split('\n')) {
    const m = re.exec(line)
    if (!m) continue
    const le = m[1] === '+Inf' ? Infinity : Number(m[1])
    buckets.set(le, (buckets.get(le) ?? 0) + Number(m[2]))
  }
  return buckets
}

export interface HistogramWindow {
  /** Observations in the window. */
  n: number
  p50Ms: number
  p95Ms: number
  p99Ms: number
  /** Share of observations at or under MATERIALIZED_TARGET_MS (exact: a bucket bound). */
  underTargetShare: number
}

/** Percentiles of the observations between two readings of one histogram. */
export function histogramWindow(before: Buckets, after: Buckets): HistogramWindow {
  const bounds = [...after.keys()].sort((a, b) => a - b)
  const cum = bounds.map((b) => (after.get(b) ?? 0) - (before.get(b) ?? 0))
  const n = cum.at(-1) ?? 0
  const quantileMs = (q: number) => {
    if (n === 0) return NaN
    const rank = q * n
    const i = cum.findIndex((c) => c >= rank)
    const upper = bounds[i]!
    if (upper === Infinity) return bounds[i - 1]! * 1000 // past the last finite bound: at least that
    const lower = i === 0 ? 0 : bounds[i - 1]!
    const below = i === 0 ? 0 : cum[i - 1]!
    const inBucket = cum[i]! - below
    return (lower + (upper - lower) * (inBucket > 0 ? (rank - below) / inBucket : 1)) * 1000
  }
  const target = bounds.indexOf(MATERIALIZED_TARGET_MS / 1000)
  return { n, p50Ms: quantileMs(0.5), p95Ms: quantileMs(0.95), p99Ms: quantileMs(0.99), underTargetShare: n > 0 && target >= 0 ? cum[target]! / n : NaN }
}

export interface MaterializeResult {
  /** The highest rate DocFlow sustained, where it came from, and whether that run saturated (else the maximum is at least this). */
  max: { opsPerS: number; from: string; saturated: boolean }
  run: TypingStormResult
  histogram: HistogramWindow
  /** Where the time goes: the stages of STAGE_HISTOGRAMS over the same window. */
  stages: Record<keyof typeof STAGE_HISTOGRAMS, HistogramWindow>
  /** Compactions and snapshots core made in the window (compaction running). */
  compactions: number
  snapshots: number
}

const int = (n: number) => Math.round(n).toLocaleString('en-US')

/** The maximum to halve: the best DocFlow typing result, saturated or not. */
export function sustainedMax(results: TypingStormResult[]): MaterializeResult['max'] | null {
  const docflow = results.filter((r) => r.system === 'DocFlow' && r.converged)
  if (docflow.length === 0) return null
  const best = docflow.reduce((a, b) => (b.sustainedOpsPerS > a.sustainedOpsPerS ? b : a))
  const saturated = docflow.some((r) => r.sustainedOpsPerS < SATURATED_BELOW * r.rate)
  return { opsPerS: best.sustainedOpsPerS, from: `typing storm at ${int(best.rate)} offered`, saturated }
}

export interface MaterializeOptions {
  durationS: number
  warmupS: number
  say?: (line: string) => void
}

/** The typing storm at 50% of `max` on `system` (a fresh DocFlow), core's histogram read around its window. */
export async function materializeAtHalf(system: RunningSystem, max: MaterializeResult['max'], o: MaterializeOptions): Promise<MaterializeResult> {
  const parts = system.docflow
  if (!parts) throw new Error(`${system.name}: ingest → materialized is measured on DocFlow only`)
  const rate = Math.max(10, Math.round(max.opsPerS / 2))
  o.say?.(`ingest → materialized: typing storm at ${int(rate)} ops/s offered, 50% of the ${max.saturated ? '' : 'at least '}${int(max.opsPerS)} ops/s DocFlow sustained (${max.from})`)
  const readings: Record<'open' | 'close', { buckets: Buckets; publish: Buckets; commit: Buckets; compactions: number; snapshots: number } | undefined> = { open: undefined, close: undefined }
  const read = async (phase: 'open' | 'close') => {
    const page = async (url: string) => (await fetch(url)).text()
    const [text, edgeText] = await Promise.all([page(parts.coreMetricsUrl), page(parts.edgeMetricsUrl)])
    const counter = (name: string, label = '') => text.split('\n').filter((l) => l.startsWith(name) && l.includes(label) && !l.startsWith('#')).reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0)
    readings[phase] = {
      buckets: parseBuckets(text, HISTOGRAM),
      publish: parseBuckets(edgeText, STAGE_HISTOGRAMS.publish),
      commit: parseBuckets(text, STAGE_HISTOGRAMS.commit),
      compactions: counter('docflow_core_compactions_total'),
      snapshots: counter('docflow_core_snapshots_total', 'outcome="written"'),
    }
  }
  const run = await typingStorm(system, { rate, durationS: o.durationS, warmupS: o.warmupS, docPrefix: `materialize-${rate}`, onWindow: read, ...(o.say ? { say: o.say } : {}) })
  const { open, close } = readings
  if (!open || !close) throw new Error('core metrics were not read around the window')
  const stages = { publish: histogramWindow(open.publish, close.publish), commit: histogramWindow(open.commit, close.commit) }
  return { max, run, histogram: histogramWindow(open.buckets, close.buckets), stages, compactions: close.compactions - open.compactions, snapshots: close.snapshots - open.snapshots }
}
