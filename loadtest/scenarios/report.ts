// The observers and join scenarios as `npm run bench` prints them: one small table each, the
// per-process breakdown under it. A scenario that threw is a row saying so.
import { formatBreakdown } from '../proc-stats.ts'
import type { JoinScenarioResult } from './join.ts'
import type { ObserversResult } from './observers.ts'
import type { IdleResult } from './idle.ts'

export type Outcome<T> = { ok: true; result: T } | { ok: false; system: string; error: string }

const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a')
const ms = (n: number) => (!Number.isFinite(n) ? 'n/a' : n < 10 ? n.toFixed(1) : int(n))

export const OBSERVERS_HEADER = '| system | observers | writer ops/s; edits in window | fanout p50 / p95 / p99 / max ms | deliveries measured (missing) | server cores | RSS sum; PSS MB | observers converged |'
export const JOIN_HEADER = '| system | joiners | doc state MB | synced with the full text | time to synced p50 / p95 / max ms | server cores during the join | PSS MB at end; peak |'

export function observersLines(outcomes: Outcome<ObserversResult>[]): string[] {
  const lines = ['Observers: one writer types into ONE document watched by every observer (fanout = observer receive − writer insert; goal p99 < 44 ms):', '', OBSERVERS_HEADER, '|---|---|---|---|---|---|---|---|']
  for (const o of outcomes) {
    if (!o.ok) {
      lines.push(`| ${o.system} | FAILED: ${o.error.split('\n')[0]!.slice(0, 300)} | | | | | | |`)
      continue
    }
    const r = o.result
    lines.push(
      `| ${r.label} | ${int(r.observers)} | ${r.opsPerS}; ${int(r.edits)} | ${ms(r.fanout.p50Ms)} / ${ms(r.fanout.p95Ms)} / **${ms(r.fanout.p99Ms)}** / ${ms(r.fanout.maxMs)} | ${int(r.deliveries)} (${int(r.missing)}) | ${r.server.cores.toFixed(2)} | ${int(r.server.rssMb)}; ${int(r.server.pssMb)} | ${r.converged === r.observers ? `${int(r.converged)}/${int(r.observers)}` : `FAILED: ${int(r.converged)}/${int(r.observers)}`} |`,
    )
  }
  lines.push('')
  for (const o of outcomes) {
    if (!o.ok) continue
    const r = o.result
    lines.push(`- ${r.system} observers: ${formatBreakdown(r.server)}; driver ${r.driver.cores.toFixed(2)} cores in ${r.driver.processes} processes, ${r.windowS.toFixed(1)} s window${r.writerLate > 0 ? `; the writer ran > 50 ms late ${r.writerLate} times (its child starved)` : ''}`)
  }
  return lines
}

export function joinLines(outcomes: Outcome<JoinScenarioResult>[]): string[] {
  const lines = ['Join: every client joins a big document at once (time = provider created → synced with the full text checked; goal p50 < 2 s):', '', JOIN_HEADER, '|---|---|---|---|---|---|---|']
  for (const o of outcomes) {
    if (!o.ok) {
      lines.push(`| ${o.system} | FAILED: ${o.error.split('\n')[0]!.slice(0, 300)} | | | | | |`)
      continue
    }
    const r = o.result
    const synced = r.synced === r.joiners ? `${r.synced}/${r.joiners}` : `FAILED: ${r.synced}/${r.joiners}`
    lines.push(
      `| ${r.label} | ${int(r.joiners)} | ${(r.docBytes / 1e6).toFixed(1)} | ${synced} | **${int(r.syncMs.p50)}** / ${int(r.syncMs.p95)} / ${int(r.syncMs.max)} | ${r.server.cores.toFixed(2)} | ${int(r.server.pssMb)}; ${int(r.server.peakPssMb ?? NaN)} |`,
    )
  }
  lines.push('')
  for (const o of outcomes) {
    if (!o.ok) continue
    const r = o.result
    lines.push(`- ${r.system} join: ${int(r.docBytes)} bytes of state written in ${r.buildS.toFixed(1)} s and found in storage; ${r.server.windowS.toFixed(1)} s join: ${formatBreakdown(r.server)}; driver ${r.driver.cores.toFixed(2)} cores in ${r.driver.processes} processes${r.failures.length > 0 ? `; failures: ${[...new Set(r.failures)].slice(0, 3).join('; ')}` : ''}`)
  }
  return lines
}

/** A scenario that did not hold: observers not converged, joiners that failed, or an error. */
export function scenarioFailed(observers: Outcome<ObserversResult>[], join: Outcome<JoinScenarioResult>[]): string[] {
  const out: string[] = []
  for (const o of observers) if (!o.ok) out.push(`${o.system} observers: ${o.error.split('\n')[0]}`)
  else if (o.result.converged < o.result.observers) out.push(`${o.result.system} observers: ${o.result.observers - o.result.converged} did not converge`)
  for (const o of join) if (!o.ok) out.push(`${o.system} join: ${o.error.split('\n')[0]}`)
  else if (o.result.synced < o.result.joiners) out.push(`${o.result.system} join: ${o.result.joiners - o.result.synced} joiners did not sync`)
  return out
}

export function idleLines(outcomes: Outcome<IdleResult>[]): string[] {
  const lines = ['Idle sockets: authenticated sockets that sync and stay idle, all on ONE edge process (goal < 20 KB each):', '', '| system | sockets on docs | answered (failed) | connect s; sockets/s | edge PSS before → after MB | **KB per socket** |', '|---|---|---|---|---|---|']
  for (const o of outcomes) {
    if (!o.ok) {
      lines.push(`| ${o.system} | FAILED: ${o.error.split('\n')[0]!.slice(0, 300)} | | | | |`)
      continue
    }
    const r = o.result
    lines.push(`| DocFlow | ${int(r.sockets)} on ${int(r.docs)} | ${int(r.connected)} (${int(r.failed)}) | ${r.connectS.toFixed(1)}; ${int(r.perSecond)} | ${int(r.edgePssBeforeMb)} → ${int(r.edgePssAfterMb)} | **${r.perSocketKb.toFixed(1)}** |`)
  }
  for (const o of outcomes) if (o.ok && o.result.failed > 0) lines.push('', `- not answered (a stock client would reconnect): ${o.result.failures.join('; ')}`)
  return lines
}
