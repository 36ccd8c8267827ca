import type { ChildProcess } from 'node:child_process'
import { rmSync, writeFileSync } from 'node:fs'
import { GaveUp, lastLines, probe, spawnLogged, stopStale, terminate, waitFor } from './proc.ts'

/** One started instance of a part of the stack: its process and how to stop it (draining). */
export interface Running {
  process: ChildProcess
  stop(): Promise<void>
}

export interface SupervisedOptions {
  /** Name in log lines (edge, core, nats-server, postgres). */
  name: string
  /** Starts the part and resolves once it is ready (healthy); rejects when it cannot start. */
  launch: () => Promise<Running>
  /** Where the running process's pid is kept (the run dir), for `npm start` after a supervisor kill -9. */
  pidFile: string
  /** The part's own log, named in restart lines. */
  logFile: string
  /** Supervisor log lines. */
  say: (line: string) => void
  /** First restart delay; doubles per consecutive restart. Default 1_000. */
  firstRestartDelayMs?: number
  /** Longest restart delay. Default 10_000. */
  maxRestartDelayMs?: number
  /** Up this long, a part counts as healthy again and its next restart starts from the first delay. Default 60_000. */
  stableAfterMs?: number
}

/**
 * A part of the local stack that `npm start` runs and brings back whenever it dies, the way
 * Kubernetes restarts a container: same launch (same port, same data), exponential backoff,
 * every restart logged. Invariant: while not stopping, exactly one instance runs or one
 * restart is pending; stop() ends both and waits until the process has exited.
 */
export class Supervised {
  private current: Running | null = null
  private launching: Promise<void> | null = null
  private restartTimer: NodeJS.Timeout | null = null
  private stopping = false
  private consecutiveRestarts = 0
  private upSince = 0
  /** Restarts so far (for tests and logs). */
  restarts = 0

  constructor(private readonly o: SupervisedOptions) {}

  get name(): string {
    return this.o.name
  }

  /** The running instance (null while it is being restarted). */
  get running(): Running | null {
    return this.current
  }

  /** First launch; rejects when the part cannot start at all. */
  async start(): Promise<void> {
    await this.launch()
  }

  /** From now on an exit is final: no restart (the stack is shutting down). */
  noMoreRestarts(): void {
    this.stopping = true
    if (this.restartTimer) clearTimeout(this.restartTimer)
  }

  /** Cancels a pending restart, waits for a launch in progress, then stops the part. */
  async stop(): Promise<void> {
    this.noMoreRestarts()
    await this.launching?.catch((err: unknown) => this.o.say(`${this.o.name}: launch during stop failed: ${(err as Error).message}`))
    const running = this.current
    this.current = null
    if (running) await running.stop()
    rmSync(this.o.pidFile, { force: true })
  }

  private launch(): Promise<void> {
    const launching = (async () => {
      const running = await this.o.launch()
      if (this.stopping) {
        await running.stop()
        return
      }
      this.current = running
      this.upSince = Date.now()
      writeFileSync(this.o.pidFile, `${running.process.pid}\n`)
      const child = running.process
      if (child.exitCode !== null || child.signalCode !== null) queueMicrotask(() => this.onExit(running, child.exitCode, child.signalCode))
      else child.once('exit', (code, signal) => this.onExit(running, code, signal))
    })()
    this.launching = launching
    return launching.finally(() => {
      if (this.launching === launching) this.launching = null
    })
  }

  private onExit(running: Running, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.stopping || this.current !== running) return
    this.current = null
    if (Date.now() - this.upSince >= (this.o.stableAfterMs ?? 60_000)) this.consecutiveRestarts = 0
    this.o.say(`${this.o.name} exited (${signal ?? `code ${code}`}); see ${this.o.logFile}`)
    this.scheduleRestart()
  }

  private scheduleRestart(): void {
    const delay = Math.min((this.o.firstRestartDelayMs ?? 1_000) * 2 ** this.consecutiveRestarts++, this.o.maxRestartDelayMs ?? 10_000)
    this.o.say(`${this.o.name}: restarting in ${delay} ms (restart ${this.restarts + 1})`)
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null
      if (this.stopping) return
      this.restarts++
      this.launch().then(
        () => this.stopping || this.o.say(`${this.o.name}: back after restart ${this.restarts}`),
        (err: unknown) => {
          this.o.say(`${this.o.name}: restart ${this.restarts} failed: ${(err as Error).message}`)
          if (!this.stopping) this.scheduleRestart()
        },
      )
    }, delay)
  }
}

/**
 * Launches a DocFlow process (edge or core): spawned with `env` in its own process group (a
 * terminal's Ctrl-C reaches only the supervisor, which stops the parts in order), ready when
 * `healthUrl` answers 200; stopped with SIGTERM (it drains), SIGKILL after 20 s.
 */
/** A Node.js part: `node <args...> <entry>`, ready when `healthUrl` answers 200. */
export function nodeProcess(name: string, entry: string, nodeArgs: string[], env: Record<string, string>, healthUrl: string, logFile: string, pidFile: string): () => Promise<Running> {
  return async () => {
    // One left running by a supervisor that was killed with -9 still holds the port.
    stopStale(pidFile, entry, 'SIGTERM')
    const child = spawnLogged(process.execPath, [...nodeArgs, entry], logFile, { env: { ...process.env, ...env }, detached: true })
    writeFileSync(pidFile, `${child.pid}\n`)
    const running: Running = { process: child, stop: () => terminate(child, 'SIGTERM', 20_000) }
    try {
      await waitFor(`${name} health at ${healthUrl} (log: ${logFile})`, async () => {
        if (child.exitCode !== null || child.signalCode !== null) throw new GaveUp(`${name} exited during start: ${lastLines(logFile)}`)
        return (await probe(healthUrl)).ok
      }, 60_000)
    } catch (err) {
      await running.stop()
      throw err
    }
    return running
  }
}
