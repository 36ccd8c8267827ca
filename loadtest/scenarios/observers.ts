// The observers scenario: N stock clients watch ONE document while one more client types single
// characters at a steady rate. Fanout = each observer's receive time − the writer's insert time,
// over every observer × every edit inserted in the window (the writer lives in the first crowd
// child, the observers in all of them; one machine, one wall clock). At the end every observer
// must hold the writer's text.
import { setTimeout as sleep } from 'node:timers/promises'
import { quantile } from '../peers/common.ts'
import { ProcSampler, type ProcReport } from '../proc-stats.ts'
import type { RunningSystem } from '../systems.ts'
import { Crowd } from './crowd.ts'

export interface ObserversOptions {
  observers: number
  /** Measured window, after the warm-up. */
  durationS: number
  /** Writer's inserts per second. Default 5. */
  opsPerS?: number
  /** Typing before the window opens. Default 3. */
  warmupS?: number
  say?: (line: string) => void
}

export interface ObserversResult {
  system: string
  label: string
  observers: number
  opsPerS: number
  windowS: number
  /** Edits the writer inserted in the window. */
  edits: number
  /** Deliveries measured (observers × edits, when none was lost). */
  deliveries: number
  /** Deliveries expected but never seen in the window's edits (lost or late past the check). */
  missing: number
  fanout: { p50Ms: number; p95Ms: number; p99Ms: number; maxMs: number }
  server: ProcReport
  driver: ProcReport
  converged: number
  failures: string[]
  /** Writer inserts that ran > 50 ms behind schedule (its child was starved). */
  writerLate: number
}

export async function observersScenario(system: RunningSystem, o: ObserversOptions): Promise<ObserversResult> {
  const say = o.say ?? (() => {})
  const opsPerS = o.opsPerS ?? 5
  const docId = `observers-${o.observers}`
  const tag = `${system.name} observers`
  say(`${tag}: connecting ${o.observers} observers and a writer to one doc`)
  const t0 = performance.now()
  const crowd = await Crowd.observe({ wsUrl: system.wsUrl, client: system.client, docId, params: system.params(docId) }, o.observers)
  try {
    say(`${tag}: all synced in ${((performance.now() - t0) / 1_000).toFixed(1)} s; typing ${opsPerS}/s, ${o.warmupS ?? 3} s warm-up, ${o.durationS} s window`)
    crowd.startTyping(opsPerS)
    await sleep((o.warmupS ?? 3) * 1_000)
    const server = new ProcSampler({ pids: () => system.serverPids() })
    const driver = new ProcSampler({ pids: () => crowd.pids() })
    const fromWall = performance.timeOrigin + performance.now()
    server.start()
    driver.start()
    await sleep(o.durationS * 1_000)
    const toWall = performance.timeOrigin + performance.now()
    const serverReport = server.stop()
    const driverReport = driver.stop()
    say(`${tag}: window closed; checking every observer holds the writer's text`)
    const { writer, observed } = await crowd.finishObserving(30_000, (line) => say(`${tag}: ${line}`))
    const inWindow = new Set<number>()
    writer.sentWallMs.forEach((t, clock) => {
      if (t >= fromWall && t < toWall) inWindow.add(clock)
    })
    const lat: number[] = []
    for (const r of observed) {
      for (let i = 0; i < r.received.length; i += 2) {
        const clock = r.received[i]!
        if (inWindow.has(clock)) lat.push(r.received[i + 1]! - writer.sentWallMs[clock]!)
      }
    }
    lat.sort((a, b) => a - b)
    const observersSeen = observed.reduce((n, r) => n + r.observers, 0)
    const converged = observed.reduce((n, r) => n + r.converged, 0)
    const failures = observed.flatMap((r) => r.failures)
    if (converged < observersSeen) say(`${tag}: ${observersSeen - converged} of ${observersSeen} observers did NOT converge: ${failures.join('; ')}`)
    return {
      system: system.name,
      label: system.label,
      observers: observersSeen,
      opsPerS,
      windowS: serverReport.windowS,
      edits: inWindow.size,
      deliveries: lat.length,
      missing: inWindow.size * observersSeen - lat.length,
      fanout: { p50Ms: quantile(lat, 0.5), p95Ms: quantile(lat, 0.95), p99Ms: quantile(lat, 0.99), maxMs: lat.length ? lat[lat.length - 1]! : NaN },
      server: serverReport,
      driver: driverReport,
      converged,
      failures,
      writerLate: writer.late,
    }
  } finally {
    await crowd.close()
  }
}
