import type { ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { rmSync, writeFileSync } from 'node:fs'
import { GaveUp, lastLines, spawnLogged, stopStale, terminate, waitFor } from './proc.ts'

const MAX_RESTART_DELAY_MS = 10_000

/** One DocFlow process (edge or core) that `npm start` runs, restarts when it dies, and drains. */
export class Service {
  private child: ChildProcess | null = null
  private stopping = false
  private restarts = 0

  constructor(
    readonly name: string,
    private readonly entry: string,
    private readonly env: Record<string, string>,
    private readonly healthUrl: string,
    private readonly logsDir: string,
    private readonly pidFile: string,
  ) {}

  /** Spawns the process and waits until its /healthz answers 200. */
  async start(): Promise<void> {
    // One left running by a supervisor that was killed with -9 still holds the port.
    stopStale(this.pidFile, this.entry, 'SIGTERM')
    this.spawn()
    await waitFor(`${this.name} health at ${this.healthUrl} (log: ${this.logFile})`, async () => {
      if (!this.child || this.child.exitCode !== null) throw new GaveUp(`${this.name} exited during start: ${lastLines(this.logFile)}`)
      return (await fetch(this.healthUrl)).ok
    }, 60_000)
  }

  /** SIGTERM (the process drains), SIGKILL after 20 s. */
  async stop(): Promise<void> {
    this.stopping = true
    if (this.child) await terminate(this.child, 'SIGTERM', 20_000)
    rmSync(this.pidFile, { force: true })
  }

  private get logFile(): string {
    return join(this.logsDir, `${this.name}.log`)
  }

  private spawn(): void {
    const child = spawnLogged(process.execPath, ['--import', 'tsx', this.entry], this.logFile, { env: { ...process.env, ...this.env } })
    this.child = child
    writeFileSync(this.pidFile, `${child.pid}\n`)
    child.once('exit', (code, signal) => {
      if (this.stopping) return
      const delay = Math.min(1_000 * 2 ** this.restarts++, MAX_RESTART_DELAY_MS)
      console.error(`docflow: ${this.name} exited (${signal ?? `code ${code}`}); restarting in ${delay} ms — see ${this.logFile}`)
      setTimeout(() => this.stopping || this.spawn(), delay)
    })
  }
}
