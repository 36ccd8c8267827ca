// The core scenarios as `npm run bench` prints them (issue 10's benchmarks): one table of cold
// loads by path, one of state?at= points, one line for ingest → materialized at half the sustained
// maximum, each figure with its target and PASS / FAIL.
import { formatBreakdown } from '../proc-stats.ts'
import type { Outcome } from './report.ts'
import { COLD_WARMUP_LOADS, JUDGED_PATH, STATE_AT_POINTS, type ColdLoadResult, type Distribution, type StateAtResult } from './core-loads.ts'
import { MATERIALIZED_TARGET_MS, type MaterializeResult } from './core-materialize.ts'

/** Issue 10's targets, ms, on P95. */
export const TARGETS_MS = { coldLoad: 100, stateAtEarly: 500, materialized: MATERIALIZED_TARGET_MS } as const

const int = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a')
const ms = (n: number) => (!Number.isFinite(n) ? 'n/a' : n < 10 ? n.toFixed(1) : int(n))
const verdict = (p95: number, target: number) => (p95 < target ? `PASS (< ${target} ms)` : `FAIL (target < ${target} ms)`)
const dist = (d: Distribution) => `${ms(d.p50Ms)} / **${ms(d.p95Ms)}** / ${ms(d.p99Ms)} / ${ms(d.maxMs)}`

export const COLD_HEADER = '| cold-load path | loads | p50 / p95 / p99 / max ms | target |'
export const STATE_AT_HEADER = '| state?at= point | seq; updates held | from snapshot seq + op-log rows replayed | loads | p50 / p95 / p99 / max ms | target |'

export function coldLoadLines(outcome: Outcome<ColdLoadResult>): string[] {
  if (!outcome.ok) return [`Cold load: FAILED: ${outcome.error.split('\n')[0]!.slice(0, 300)}`]
  const r = outcome.result
  const lines = [
    `Cold load of a document of ${int(r.doc.updates)} typed updates (${int(r.doc.stateBytes)} bytes of state; stored as a compacted state of ${int(r.stored.stateBytes)} bytes + ${int(r.stored.tailRows)} op-log rows; built through JetStream and core in ${r.doc.buildS.toFixed(1)} s; core restarted before the loads, the edge's room closed before each socket; after ${COLD_WARMUP_LOADS} warm-up loads of each path):`,
    '',
    COLD_HEADER,
    '|---|---|---|---|',
  ]
  for (const p of r.paths) lines.push(`| ${p.path}${p.path === JUDGED_PATH ? ' (judged: what a user waits for)' : ''} | ${p.ms.n} | ${dist(p.ms)} | ${p.path === JUDGED_PATH ? verdict(p.ms.p95Ms, TARGETS_MS.coldLoad) : `${p.ms.p95Ms < TARGETS_MS.coldLoad ? 'under' : 'over'} ${TARGETS_MS.coldLoad} ms`} |`)
  lines.push(`| (edge first socket, only loads whose first socket synced) | ${r.edgeFirstTry.n} | ${dist(r.edgeFirstTry)} | not judged |`)
  lines.push('')
  lines.push(`- paths: edge first socket = stock y-websocket client created → synced with the whole text (edge asks core over NATS, core reads PostgreSQL); core state over NATS = the edge's df.core.state request alone; read API = GET /v1/docs/<id>/state; core worker cache miss = core's readDocParts + a Y.Doc built from the parts, in the bench process`)
  lines.push(`- warm-up, not counted (the first ${COLD_WARMUP_LOADS} loads of each path after core's restart: a new process's JIT and first connections): ${r.warmup.map((w) => `${w.path} p50 ${int(w.ms.p50Ms)} / max ${int(w.ms.maxMs)} ms`).join('; ')}`)
  const { stateFrameInMs: frameIn, clientApplyMs: apply } = r.edgeSplit
  lines.push(`- edge first socket, where the time goes (loads whose first socket synced): socket open → the state frame received (edge, NATS, core, PostgreSQL) p50 ${int(frameIn.p50Ms)} / p95 ${int(frameIn.p95Ms)} ms; the stock client's handling of that frame (its Yjs apply of the ${int(r.doc.stateBytes)}-byte state, in the bench process) p50 ${int(apply.p50Ms)} / p95 ${int(apply.p95Ms)} ms; the rest is connecting the socket`)
  const closes = Object.entries(r.edgeCloses)
  lines.push(closes.length === 0 ? '- edge first socket: no socket was closed before it synced' : `- edge first socket: sockets closed before sync (the stock client reconnected, inside the time): ${closes.map(([code, n]) => `${n} × ${code}`).join(', ')}; ms from open to close: ${closedAfter(r.edgeClosedAfterOpenMs)}`)
  lines.push(r.cold ? '- cold throughout: the op log was unchanged after the loads, so no core worker loaded the document into its cache' : '- NOT COLD: the op log changed during the loads (a client wrote?), so core may have answered from its cache')
  return lines
}

export function stateAtLines(outcome: Outcome<StateAtResult>): string[] {
  if (!outcome.ok) return [`state?at=: FAILED: ${outcome.error.split('\n')[0]!.slice(0, 300)}`]
  const r = outcome.result
  const lines = [`state?at= of the same document (GET /v1/docs/<id>/state?at=<stream seq>; ${r.snapshots} snapshot${r.snapshots === 1 ? '' : 's'} of it in the blob store):`, '', STATE_AT_HEADER, '|---|---|---|---|---|---|']
  for (const p of r.points) {
    const target = p.name === 'early' ? verdict(p.ms.p95Ms, TARGETS_MS.stateAtEarly) : 'contrast'
    lines.push(`| ${p.name} (${Math.round(STATE_AT_POINTS[p.name] * 100)}% of its life) | ${p.seq}; ${int(p.updatesHeld)} | ${p.snapshotSeq || 'none'} + ${int(p.replayedRows)} | ${p.ms.n} | ${dist(p.ms)} | ${target} |`)
  }
  return lines
}

export function materializeLines(outcome: Outcome<MaterializeResult>): string[] {
  if (!outcome.ok) return [`Ingest → materialized at 50% of the sustained maximum: FAILED: ${outcome.error.split('\n')[0]!.slice(0, 300)}`]
  const r = outcome.result
  const h = r.histogram
  const sql = r.run.ingestToCommitted
  const converged = r.run.converged ? '' : ` — FAILED: ${r.run.driverResult.docs - r.run.driverResult.converged} docs diverged`
  return [
    `Ingest → materialized at 50% of the sustained maximum (${int(r.run.rate)} ops/s offered = half of the ${r.max.saturated ? '' : 'at least '}${int(r.max.opsPerS)} DocFlow sustained in the ${r.max.from}${r.max.saturated ? '' : ', which did not saturate'}), compaction running (${int(r.compactions)} compactions, ${int(r.snapshots)} snapshots in the window)${converged}:`,
    `- DocFlow @ ${int(r.run.rate)}: core ingest → commit histogram over ${int(h.n)} updates: p50 ${ms(h.p50Ms)} / p95 **${ms(h.p95Ms)}** / p99 ${ms(h.p99Ms)} ms (within buckets); ${(h.underTargetShare * 100).toFixed(1)}% at or under ${MATERIALIZED_TARGET_MS} ms: ${h.underTargetShare >= 0.95 ? `PASS (P95 < ${MATERIALIZED_TARGET_MS} ms)` : `FAIL (target P95 < ${MATERIALIZED_TARGET_MS} ms)`}`,
    `- DocFlow @ ${int(r.run.rate)}: stages — edge received → PubAck (publish linger included) p50 ${ms(r.stages.publish.p50Ms)} / p95 ${ms(r.stages.publish.p95Ms)} ms; core batch handed to the group commit → committed p50 ${ms(r.stages.commit.p50Ms)} / p95 ${ms(r.stages.commit.p95Ms)} ms (per batch)`,
    `- DocFlow @ ${int(r.run.rate)}: op log committed_at − ingest_ts over ${int(sql?.n ?? NaN)} rows: p50 ${ms(sql?.p50Ms ?? NaN)} / p95 ${ms(sql?.p95Ms ?? NaN)} ms; sustained ${int(r.run.sustainedOpsPerS)} ops/s, fanout p50 / p95 ${ms(r.run.fanout.p50Ms)} / ${ms(r.run.fanout.p95Ms)} ms`,
    `- DocFlow @ ${int(r.run.rate)}: ${r.run.server.processes} processes; ${formatBreakdown(r.run.server)}`,
  ]
}

/** Open → close times of dropped sockets: median and max, and how many never opened. */
function closedAfter(msList: number[]): string {
  const opened = msList.filter(Number.isFinite).sort((a, b) => a - b)
  const never = msList.length - opened.length
  const median = opened.length ? opened[Math.floor((opened.length - 1) / 2)]! : NaN
  return `median ${ms(median)}, max ${ms(opened.at(-1) ?? NaN)}${never > 0 ? `; ${never} never opened` : ''}`
}
