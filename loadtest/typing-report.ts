// The typing storm as `npm run bench` prints it: one row per system and rate, and the ratio lines
// (DocFlow's ops/s per server core against each peer's; n/a, saying why, when either run failed).
import type { TypingStormResult } from './typing-storm.ts'

export const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a')
/** Latency the way the issue's table writes it: one decimal under 10 ms, whole ms above. */
export const ms = (n: number) => (!Number.isFinite(n) ? 'n/a' : n < 10 ? n.toFixed(1) : int(n))

export const TABLE_HEADER = '| offered | system | sustained ops/s | fanout p50 / p95 / p99 ms | server cores | **ops/s per server core** | persisted p50 / max ms | RSS sum; PSS MB |'

export function row(r: TypingStormResult): string {
  const sustained = r.converged ? int(r.sustainedOpsPerS) : `FAILED: ${r.driverResult.docs - r.driverResult.converged}/${r.driverResult.docs} docs diverged (${int(r.sustainedOpsPerS)})`
  const persisted = `${ms(r.persisted.p50Ms)} / ${ms(r.persisted.maxMs)}${r.persisted.missing > 0 ? ` (${r.persisted.missing} of ${r.persisted.n + r.persisted.missing} samples not found)` : ''}`
  return `| ${int(r.rate)} | ${r.label} | ${sustained} | ${ms(r.fanout.p50Ms)} / ${ms(r.fanout.p95Ms)} / ${ms(r.fanout.p99Ms)} | ${r.server.cores.toFixed(2)} | **${int(r.opsPerServerCore)}** | ${persisted} | ${int(r.server.rssMb)}; ${int(r.server.pssMb)} |`
}

/** The typing result of `system` at `rate`, when it ran. */
export function resultAt(results: TypingStormResult[], rate: number, system: string): TypingStormResult | undefined {
  return results.find((r) => r.rate === rate && r.system === system)
}

/** Why a run's figures cannot stand in a ratio (edits lost, or not all persisted), or null. */
export function invalid(r: TypingStormResult): string | null {
  if (!r.converged) return 'docs diverged'
  if (r.persisted.missing > 0) return `${r.persisted.missing} sampled edits not persisted`
  return null
}

export function ratioLine(results: TypingStormResult[], rate: number): string {
  const docflowRun = resultAt(results, rate, 'DocFlow')
  const why = (r: TypingStormResult | undefined) => (r ? invalid(r) : null)
  const ratio = (name: string) => {
    const other = resultAt(results, rate, name)
    if (!docflowRun || !other) return `n/a× ${name}`
    const failed = why(docflowRun) ? `DocFlow ${why(docflowRun)}` : why(other) ? `${name} ${why(other)}` : null
    return failed ? `n/a× ${name} (FAILED: ${failed})` : `${(docflowRun.opsPerServerCore / other.opsPerServerCore).toFixed(2)}× ${name}`
  }
  const edges = docflowRun?.edges?.length ?? 1
  return `ops/s per server core: DocFlow${edges > 1 ? ` (${edges} edges)` : ''} ${docflowRun === undefined ? 'n/a' : int(docflowRun.opsPerServerCore)} = ${ratio('y-websocket reference')}, ${ratio('Hocuspocus')}`
}
