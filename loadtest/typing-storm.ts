// The typing-storm scenario on one running system: offered rate R → R/10 docs, 2 stock clients
// each typing single characters at 5 ops/s. Warm-up, then a measured window in which every
// server process's CPU is sampled from /proc, then the clients stop and every doc must converge.
// On a system with several edges (DocFlow --edges n), doc i's two clients connect to edges i and
// i + 1 (mod n): never the same edge, so every edit reaches its peer through NATS, and the docs
// spread evenly; fanout is measured exactly as with one edge (both clients in one driver child).
import { setTimeout as sleep } from 'node:timers/promises'
import { DriverFleet, type DriverResult } from './driver.ts'
import { EdgeWindowSampler, type EdgeWindow } from './edge-stats.ts'
import { ProcSampler, type ProcReport } from './proc-stats.ts'
import { quantile } from './peers/common.ts'
import type { LatencySummary, PersistedLatency, RunningSystem } from './systems.ts'

export interface TypingStormOptions {
  /** Offered edits per second (all clients together). */
  rate: number
  /** Measured window, after the warm-up. */
  durationS: number
  /** Typing before the window opens. Default 5. */
  warmupS?: number
  /** Inserts per second per client. Default 5. */
  opsPerClientPerS?: number
  /** Doc ids are `${docPrefix}-${i}`. Default `storm-${rate}`. */
  docPrefix?: string
  /** A progress line (about every 5 s). Default: nowhere. */
  say?: (line: string) => void
  /** Called (and awaited) right before the measured window opens and right after it closes. Default: nothing. */
  onWindow?: (phase: 'open' | 'close') => Promise<void>
}

export interface TypingStormResult {
  system: string
  label: string
  rate: number
  docs: number
  windowS: number
  /** Edits the peers received in the window / window seconds. */
  sustainedOpsPerS: number
  fanout: { p50Ms: number; p95Ms: number; p99Ms: number }
  server: ProcReport
  /** The driver's own CPU (not counted as server): near 1 core per child means it saturated. */
  driver: ProcReport
  opsPerServerCore: number
  persisted: PersistedLatency
  ingestToCommitted?: LatencySummary
  driverResult: Omit<DriverResult, 'fanoutMs' | 'samples'>
  /** Every doc converged with every typed edit. */
  converged: boolean
  /** Several edges: each edge's figures over the window. */
  edges?: EdgeWindow[]
}

export async function typingStorm(system: RunningSystem, o: TypingStormOptions): Promise<TypingStormResult> {
  const say = o.say ?? (() => {})
  const opsPerClientPerS = o.opsPerClientPerS ?? 5
  const docCount = Math.max(1, Math.round(o.rate / (2 * opsPerClientPerS)))
  const prefix = o.docPrefix ?? `storm-${o.rate}`
  const edges = system.edges ?? []
  const docs = Array.from({ length: docCount }, (_, i) => ({
    docId: `${prefix}-${i}`,
    params: system.params(`${prefix}-${i}`),
    ...(edges.length > 1 ? { wsUrls: [edges[i % edges.length]!.wsUrl, edges[(i + 1) % edges.length]!.wsUrl] as [string, string] } : {}),
  }))
  const tag = `${system.name} @ ${o.rate.toLocaleString('en-US')}`
  say(`${tag}: connecting ${docCount * 2} clients on ${docCount} docs${edges.length > 1 ? `, a doc's two clients on two different edges of ${edges.length}` : ''}`)
  const fleet = await DriverFleet.spawn({ wsUrl: system.wsUrl, client: system.client, docs, opsPerClientPerS })
  try {
    fleet.startTyping()
    const warmupS = o.warmupS ?? 5
    say(`${tag}: typing, ${warmupS} s warm-up`)
    await sleep(warmupS * 1_000)
    const server = new ProcSampler({ pids: () => system.serverPids(), trackPss: true })
    const driver = new ProcSampler({ pids: () => fleet.pids() })
    const perEdge = edges.length > 1 ? new EdgeWindowSampler(edges) : undefined
    await perEdge?.start()
    await o.onWindow?.('open')
    const base = fleet.progress()
    const windowStartWall = Date.now()
    const t0 = performance.now()
    fleet.window(true)
    server.start()
    driver.start()
    for (let elapsed = 0; elapsed < o.durationS; ) {
      const step = Math.min(5, o.durationS - elapsed)
      await sleep(step * 1_000)
      elapsed += step
      const p = fleet.progress()
      const s = (performance.now() - t0) / 1_000
      say(`${tag}: ${elapsed}/${o.durationS} s, ${Math.round(p.receivedInWindow / s).toLocaleString('en-US')} ops/s received so far, ${Math.round((p.sent - base.sent) / s).toLocaleString('en-US')} typed`)
    }
    fleet.window(false)
    const windowS = (performance.now() - t0) / 1_000
    const windowEndWall = Date.now()
    await o.onWindow?.('close')
    const serverReport = server.stop()
    const driverReport = driver.stop()
    const edgeWindows = await perEdge?.stop()
    say(`${tag}: window closed; stopping the typists and checking every doc converged`)
    const result = await fleet.finish()
    const converged = result.converged === result.docs
    const typedPerS = result.sentInWindow / windowS
    if (typedPerS < 0.95 * o.rate) say(`${tag}: the driver fell behind: typed ${Math.round(typedPerS)} ops/s of ${o.rate} offered (box saturated?)`)
    if (!converged) say(`${tag}: ${result.docs - result.converged} of ${result.docs} docs did NOT converge: ${result.failures.join('; ')}`)
    const persisted = await system.persistedLatency(result.samples)
    const ingestToCommitted = await system.ingestToCommitted?.(windowStartWall, windowEndWall)
    const lat = result.fanoutMs.sort((a, b) => a - b)
    const sustained = result.receivedInWindow / windowS
    const { fanoutMs: _f, samples: _s, ...driverResult } = result
    return {
      system: system.name,
      label: system.label,
      rate: o.rate,
      docs: docCount,
      windowS,
      sustainedOpsPerS: sustained,
      fanout: { p50Ms: quantile(lat, 0.5), p95Ms: quantile(lat, 0.95), p99Ms: quantile(lat, 0.99) },
      server: serverReport,
      driver: driverReport,
      opsPerServerCore: sustained / serverReport.cores,
      persisted,
      ...(ingestToCommitted ? { ingestToCommitted } : {}),
      driverResult,
      converged,
      ...(edgeWindows ? { edges: edgeWindows } : {}),
    }
  } finally {
    await fleet.close()
  }
}
