import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { createServer } from 'node:net'
import { existsSync, openSync, readFileSync, statSync } from 'node:fs'
import { execFileSync } from 'node:child_process'

/** A port that was free a moment ago (bind to 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number }
      srv.close(() => resolve(port))
    })
  })
}

/** `n` distinct ports that were free a moment ago (the kernel may hand one free port out twice in a row). */
export async function freePorts(n: number): Promise<number[]> {
  const ports = new Set<number>()
  while (ports.size < n) ports.add(await freePort())
  return [...ports]
}

/** Thrown by a waitFor check to stop waiting at once (the process it waits for has died). */
export class GaveUp extends Error {
  override name = 'GaveUp'
}

/** How long one check of a start may take: a port held by something that accepts and never answers must not stall the wait. */
export const CHECK_TIMEOUT_MS = 2_000

/**
 * Polls `check` until it returns true; throws `what` with the last error after `timeoutMs`. A
 * check still pending at the deadline counts as failed (checks should bound themselves with
 * CHECK_TIMEOUT_MS, so a hung one is retried rather than waited out).
 */
export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000, everyMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < deadline) {
    let timer: NodeJS.Timeout | undefined
    const expired = new Promise<'expired'>((resolve) => (timer = setTimeout(() => resolve('expired'), Math.max(0, deadline - Date.now()))))
    try {
      const result = await Promise.race([check(), expired])
      if (result === 'expired') {
        last = new Error('the last check did not answer')
        break
      }
      if (result) return
    } catch (err) {
      if (err instanceof GaveUp) throw new Error(`${what}: ${err.message}`)
      last = err
    } finally {
      clearTimeout(timer)
    }
    await new Promise((r) => setTimeout(r, everyMs))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`)
}

/**
 * Runs `start`, and again while it fails with an error matching `taken` (three tries in all): a
 * port picked free can be taken by another process before the server binds it. `beforeRetry`
 * picks new ports.
 */
export async function onFreePorts<T>(start: () => Promise<T>, taken: RegExp, beforeRetry: (err: Error) => unknown): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start()
    } catch (err) {
      if (attempt === 3 || !taken.test((err as Error).message)) throw err
      await beforeRetry(err as Error)
    }
  }
}

/** GET `url` within CHECK_TIMEOUT_MS (for start checks: a peer that never answers is a failed attempt, not a hang). */
export function probe(url: string): Promise<Response> {
  return fetch(url, { signal: AbortSignal.timeout(CHECK_TIMEOUT_MS) })
}

/** Starts a long-running program with its output appended to `logFile`. */
export function spawnLogged(cmd: string, args: string[], logFile: string, opts: SpawnOptions = {}): ChildProcess {
  const fd = openSync(logFile, 'a')
  return spawn(cmd, args, { ...opts, stdio: ['ignore', fd, fd] })
}

/** Resolves when the process has exited (at once if it already has). */
export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((r) => child.once('exit', () => r()))
}

/** Sends `signal`, then SIGKILL if the process is still there after `graceMs`. */
export async function terminate(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  child.kill(signal)
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
  await exited(child)
  clearTimeout(timer)
}

/**
 * True while the process with this pid runs. A zombie does not: a part whose supervisor was
 * killed is reparented to init, which may reap it seconds later (or never, in a container
 * whose first process does not reap).
 */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false
  }
  const state = readStat(pid)?.state
  return state !== undefined && state !== 'Z'
}

/**
 * Stops the process named on the first line of `pidFile` if it still runs, its command line
 * contains `program` and it started before the file was last written, and waits for it. A
 * recycled pid is left alone: pids wrap at 32768 on many Linux boxes, and a test run forks
 * thousands (every PostgreSQL backend), so a stale file can name another deployment's process.
 * Returns whether it stopped one.
 */
export function stopStale(pidFile: string, program: string, signal: NodeJS.Signals, timeoutMs = 30_000): boolean {
  if (!existsSync(pidFile)) return false
  const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0])
  if (!pid || pid === process.pid || !alive(pid)) return false
  const startedMs = processStartMs(pid)
  if (startedMs === null || startedMs > statSync(pidFile).mtimeMs + START_TIME_SLACK_MS) return false
  let cmdline = ''
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  if (!cmdline.includes(program)) return false
  process.kill(pid, signal)
  const deadline = Date.now() + timeoutMs
  while (alive(pid) && Date.now() < deadline) execFileSync('sleep', ['0.1'])
  if (alive(pid)) process.kill(pid, 'SIGKILL')
  return true
}

/** How far a start time read from /proc may be off. */
const START_TIME_SLACK_MS = 1_000

/** When `pid` started (ms since epoch, to about 10 ms), or null when it is gone. */
function processStartMs(pid: number): number | null {
  const stat = readStat(pid)
  return stat ? Date.now() - ((uptimeTicks() - stat.startTicks) * 1000) / CLK_TCK : null
}

/** Clock ticks per second of /proc's times: USER_HZ, which Linux fixes at 100 whatever the kernel's HZ. */
export const CLK_TCK = 100

export interface ProcStat {
  pid: number
  ppid: number
  comm: string
  /** R, S, D, T (stopped by a signal), Z… */
  state: string
  /** utime + stime, clock ticks. */
  cpuTicks: number
  /** Start time after boot, clock ticks. */
  startTicks: number
}

/** /proc/<pid>/stat (or one thread's, /proc/<pid>/task/<tid>/stat), or undefined when it is gone. */
export function readStat(pid: number, tid?: number): ProcStat | undefined {
  let raw: string
  try {
    raw = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8')
  } catch {
    return undefined // exited between listing and reading
  }
  // comm is in parentheses and may hold spaces or parentheses: split after the last ')'.
  const close = raw.lastIndexOf(')')
  const comm = raw.slice(raw.indexOf('(') + 1, close)
  const f = raw.slice(close + 2).split(' ')
  // f[0] is field 3 (state): field n is f[n - 3].
  return { pid, ppid: Number(f[1]), comm, state: f[0] ?? '', cpuTicks: Number(f[11]) + Number(f[12]), startTicks: Number(f[19]) }
}

/** Time since boot, in /proc's clock ticks. */
export function uptimeTicks(): number {
  return Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * CLK_TCK
}

/** The last lines of a log file, for an error message. */
export function lastLines(file: string, n = 5): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-n).join('\n')
  } catch (err) {
    return `(no log: ${(err as Error).message})`
  }
}
