// CPU and memory of a changing set of processes, from /proc only. Sampled every ~1 s so
// processes that come and go inside the window (PostgreSQL backends) are counted.
// Invariant: a process's CPU counts from the window start (or its own start, if later) to its
// last sample; cores = Σ ΔCPU seconds / window seconds.
import { readFileSync, readdirSync } from 'node:fs'
import { CLK_TCK, readStat, uptimeTicks, type ProcStat } from '../scripts/lib/proc.ts'
import { SUPERVISOR_BUNDLE } from '../scripts/lib/supervisor-bundle.mjs'

/** Every process on the machine now. */
export function allStats(): ProcStat[] {
  const out: ProcStat[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const s = readStat(Number(name))
    if (s) out.push(s)
  }
  return out
}

/** `roots` and all their descendants (by ppid), from one listing. */
export function descendants(roots: number[], stats = allStats()): number[] {
  const children = new Map<number, number[]>()
  for (const s of stats) children.set(s.ppid, [...(children.get(s.ppid) ?? []), s.pid])
  const alive = new Set(stats.map((s) => s.pid))
  const out: number[] = []
  const queue = roots.filter((p) => alive.has(p))
  while (queue.length > 0) {
    const pid = queue.shift()!
    out.push(pid)
    queue.push(...(children.get(pid) ?? []))
  }
  return out
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim()
  } catch {
    return ''
  }
}

/** What a process is, for the breakdown: by command line, else its command name. */
export function roleOf(pid: number, comm: string): string {
  const cmd = cmdline(pid)
  if (/edge\/main\.[jt]s/.test(cmd)) return 'edge'
  if (/core\/main\.[jt]s/.test(cmd)) return 'core'
  if (cmd.includes('scripts/start.ts') || cmd.includes(`scripts/${SUPERVISOR_BUNDLE}`)) return 'supervisor'
  if (cmd.includes('hocuspocus-server')) return 'hocuspocus'
  if (cmd.includes('ywebsocket-server')) return 'y-websocket'
  if (cmd.includes('loadtest/driver') || cmd.includes('loadtest/scenarios/crowd')) return 'driver'
  if (comm === 'postgres' || comm.startsWith('postgres')) return 'postgres'
  return comm
}

/** RSS and PSS in kB from /proc/<pid>/smaps_rollup (zeros when gone). */
export function memoryKb(pid: number): { rssKb: number; pssKb: number } {
  try {
    const raw = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8')
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(raw)?.[1] ?? 0)
    return { rssKb: kb('Rss'), pssKb: kb('Pss') }
  } catch {
    return { rssKb: 0, pssKb: 0 }
  }
}

export interface RoleUsage {
  role: string
  /** Processes of this role seen in the window. */
  count: number
  cores: number
  rssMb: number
  pssMb: number
}

export interface ProcReport {
  windowS: number
  /** Σ ΔCPU seconds / window seconds over every process seen. */
  cores: number
  /** Sums over the processes alive at the end of the window. */
  rssMb: number
  pssMb: number
  processes: number
  byRole: RoleUsage[]
  /** With trackPss: the largest PSS sum seen at one sample. */
  peakPssMb?: number
  /** With trackPss: the PSS sum averaged over every sample of the window (the end one is `pssMb`). */
  meanPssMb?: number
  /** With trackPss: how many samples `meanPssMb` averages. */
  pssSamples?: number
}

export interface ProcSamplerOptions {
  /** Every process to count, now (called at each sample). */
  pids: () => number[]
  /** Sample period. Default 1000. */
  everyMs?: number
  /**
   * Also sum PSS at every sample and report its peak and mean (one smaps_rollup read per process
   * per sample): the end sample alone hides how the window got there. Default false.
   */
  trackPss?: boolean
}

interface Seen {
  role: string
  firstTicks: number
  lastTicks: number
}

/** Samples `pids()` from start() to stop(); stop() returns the window's usage. */
export class ProcSampler {
  private readonly seen = new Map<string, Seen>()
  private timer: NodeJS.Timeout | undefined
  private startMs = 0
  private startUptimeTicks = 0
  private peakPssKb = 0
  private pssSumKb = 0
  private pssSamples = 0

  constructor(private readonly options: ProcSamplerOptions) {}

  start(): void {
    this.startMs = performance.now()
    this.startUptimeTicks = uptimeTicks()
    this.sample(true)
    this.timer = setInterval(() => this.sample(false), this.options.everyMs ?? 1_000)
  }

  stop(): ProcReport {
    clearInterval(this.timer)
    const last = this.sample(false)
    const windowS = (performance.now() - this.startMs) / 1_000
    const roles = new Map<string, RoleUsage>()
    const role = (r: string) => roles.get(r) ?? roles.set(r, { role: r, count: 0, cores: 0, rssMb: 0, pssMb: 0 }).get(r)!
    for (const s of this.seen.values()) {
      const u = role(s.role)
      u.count++
      u.cores += (s.lastTicks - s.firstTicks) / CLK_TCK / windowS
    }
    for (const p of last) {
      const m = memoryKb(p.pid)
      const u = role(this.seen.get(key(p))!.role)
      u.rssMb += m.rssKb / 1024
      u.pssMb += m.pssKb / 1024
    }
    const byRole = [...roles.values()].sort((a, b) => b.cores - a.cores)
    const sum = (f: (u: RoleUsage) => number) => byRole.reduce((a, u) => a + f(u), 0)
    const report: ProcReport = { windowS, cores: sum((u) => u.cores), rssMb: sum((u) => u.rssMb), pssMb: sum((u) => u.pssMb), processes: this.seen.size, byRole }
    if (this.options.trackPss) {
      // The end read comes just after the last sample: the peak covers it too.
      report.peakPssMb = Math.max(this.peakPssKb / 1024, report.pssMb)
      report.meanPssMb = this.pssSumKb / 1024 / this.pssSamples
      report.pssSamples = this.pssSamples
    }
    return report
  }

  /** Reads every listed process; returns those alive now. */
  private sample(first: boolean): ProcStat[] {
    const alive: ProcStat[] = []
    for (const pid of new Set(this.options.pids())) {
      const s = readStat(pid)
      if (!s) continue
      alive.push(s)
      const k = key(s)
      const known = this.seen.get(k)
      if (known) {
        known.lastTicks = s.cpuTicks
        continue
      }
      // Born inside the window: all of its CPU is the window's.
      const bornInside = !first && s.startTicks >= this.startUptimeTicks
      this.seen.set(k, { role: roleOf(pid, s.comm), firstTicks: bornInside ? 0 : s.cpuTicks, lastTicks: s.cpuTicks })
    }
    if (this.options.trackPss) {
      const pssKb = alive.reduce((a, p) => a + memoryKb(p.pid).pssKb, 0)
      this.peakPssKb = Math.max(this.peakPssKb, pssKb)
      this.pssSumKb += pssKb
      this.pssSamples++
    }
    return alive
  }
}

/** pid + start time: a reused pid is another process. */
const key = (s: ProcStat) => `${s.pid}:${s.startTicks}`

/** One line per role, heaviest first: `core 0.48 (1), postgres 0.55 (16 processes), ...`. */
export function formatBreakdown(r: ProcReport): string {
  return r.byRole
    .filter((u) => u.cores >= 0.005 || u.pssMb >= 1)
    .map((u) => `${u.role} ${u.cores.toFixed(2)} cores${u.count > 1 ? ` (${u.count} processes)` : ''}, PSS ${u.pssMb.toFixed(0)} MB`)
    .join('; ')
}
