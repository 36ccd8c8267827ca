// Many stock clients on ONE document, spread over child processes so the driver is not the
// bottleneck: the observers scenario (one writer types, everyone else watches) and the join
// scenario (everyone connects to a big document at once). The clients are the typing storm's
// (loadtest/driver.ts yWebsocketClient / hocuspocusClient).
// Invariant: every time here is a wall time, performance.timeOrigin + performance.now() of the
// process that saw the event; the processes share the machine's clock, so a receive time in one
// child minus the writer's insert time in another is the fanout latency.
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import * as Y from 'yjs'
import { hocuspocusClient, yWebsocketClient, type Client } from '../driver.ts'
import type { ClientKind } from '../systems.ts'

export interface CrowdPlan {
  wsUrl: string
  client: ClientKind
  docId: string
  params: Record<string, string>
  /** Clients per child process. Default 300. */
  clientsPerChild?: number
  /** How long every client may take to connect and sync. Default 180_000. */
  connectTimeoutMs?: number
}

/** What each observer child sends back: receive wall times of the writer's edits, and convergence. */
export interface ObserveResult {
  /** Pairs [writer clock, receive wall ms], flattened, over every observer of the child. */
  received: number[]
  observers: number
  /** Observers whose text equals the writer's final text. */
  converged: number
  failures: string[]
}

export interface JoinResult {
  /** Per joiner: creation of its provider → synced with the whole text, ms. */
  syncMs: number[]
  failures: string[]
}

export interface WriterResult {
  /** Insert wall time of each writer clock. */
  sentWallMs: number[]
  text: string
  /** Inserts that ran later than their schedule by more than 50 ms (the writer's child was starved). */
  late: number
}

type ToChild =
  | { t: 'observe'; plan: Required<Omit<CrowdPlan, 'clientsPerChild'>>; observers: number; writer: boolean }
  | { t: 'type'; opsPerS: number }
  | { t: 'stop-typing' }
  | { t: 'check'; text: string; timeoutMs: number }
  | { t: 'join'; plan: Required<Omit<CrowdPlan, 'clientsPerChild'>>; joiners: number; expectLength: number }
  | { t: 'ping' }
  | { t: 'close' }

type FromChild =
  | { t: 'ready' }
  | { t: 'error'; message: string }
  | { t: 'writer'; result: WriterResult }
  | { t: 'observed'; result: ObserveResult }
  | { t: 'joined'; result: JoinResult }

// ---------------------------------------------------------------- parent side

interface ChildState {
  process: ChildProcess
  waiters: ((m: FromChild) => void)[]
}

/** The crowd's child processes; the first one holds the writer (observers) . */
export class Crowd {
  private constructor(private readonly children: ChildState[]) {}

  private static forkChildren(n: number): Crowd {
    const children: ChildState[] = []
    for (let i = 0; i < n; i++) {
      const child = fork(fileURLToPath(import.meta.url), [], { execArgv: ['--import', 'tsx', '--max-old-space-size=8192'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
      const state: ChildState = { process: child, waiters: [] }
      child.on('message', (m: FromChild) => state.waiters.shift()?.(m))
      child.on('exit', (code, signal) => {
        for (const w of state.waiters.splice(0)) w({ t: 'error', message: `crowd child exited (${code ?? signal})` })
      })
      children.push(state)
    }
    return new Crowd(children)
  }

  /** `observers` clients plus one writer (in the first child) on the doc; resolves once all synced. */
  static async observe(plan: CrowdPlan, observers: number): Promise<Crowd> {
    const perChild = plan.clientsPerChild ?? 300
    const crowd = Crowd.forkChildren(Math.max(1, Math.ceil(observers / perChild)))
    const full = { connectTimeoutMs: 180_000, ...plan }
    const { wsUrl, client, docId, params, connectTimeoutMs } = full
    try {
      await Promise.all(
        crowd.children.map((c, i) => {
          const n = Math.min(perChild, observers - i * perChild)
          c.process.send({ t: 'observe', plan: { wsUrl, client, docId, params, connectTimeoutMs }, observers: n, writer: i === 0 } satisfies ToChild)
          return crowd.reply(c, 'ready')
        }),
      )
    } catch (err) {
      await crowd.close()
      throw err
    }
    return crowd
  }

  /** Forks the joiners' children and waits until each has loaded (idle until join()). */
  static async forJoin(joiners: number, clientsPerChild = 50): Promise<Crowd> {
    const crowd = Crowd.forkChildren(Math.max(1, Math.ceil(joiners / clientsPerChild)))
    try {
      await Promise.all(
        crowd.children.map((c) => {
          c.process.send({ t: 'ping' } satisfies ToChild)
          return crowd.reply(c, 'ready')
        }),
      )
    } catch (err) {
      await crowd.close()
      throw err
    }
    return crowd
  }

  pids(): number[] {
    return this.children.flatMap((c) => (c.process.pid ? [c.process.pid] : []))
  }

  /** The writer starts typing single characters at `opsPerS`. */
  startTyping(opsPerS: number): void {
    this.children[0]!.process.send({ t: 'type', opsPerS } satisfies ToChild)
  }

  /** Stops the writer, then waits (up to `timeoutMs`) for every observer to hold the writer's text. */
  async finishObserving(timeoutMs = 30_000, say: (line: string) => void = () => {}): Promise<{ writer: WriterResult; observed: ObserveResult[] }> {
    const first = this.children[0]!
    first.process.send({ t: 'stop-typing' } satisfies ToChild)
    const writer = ((await this.reply(first, 'writer')) as Extract<FromChild, { t: 'writer' }>).result
    say(`the writer stopped after ${writer.sentWallMs.length} edits`)
    let replied = 0
    const observed = await Promise.all(
      this.children.map(async (c) => {
        c.process.send({ t: 'check', text: writer.text, timeoutMs } satisfies ToChild)
        const r = ((await this.reply(c, 'observed')) as Extract<FromChild, { t: 'observed' }>).result
        say(`observers checked in ${++replied} of ${this.children.length} children`)
        return r
      }),
    )
    return { writer, observed }
  }

  /** Every child opens its share of `joiners` clients at once; resolves with each one's time to synced. */
  async join(plan: CrowdPlan, joiners: number, expectLength: number): Promise<JoinResult> {
    const { wsUrl, client, docId, params } = plan
    const perChild = Math.ceil(joiners / this.children.length)
    const parts = await Promise.all(
      this.children.map(async (c, i) => {
        const n = Math.max(0, Math.min(perChild, joiners - i * perChild))
        c.process.send({ t: 'join', plan: { wsUrl, client, docId, params, connectTimeoutMs: plan.connectTimeoutMs ?? 180_000 }, joiners: n, expectLength } satisfies ToChild)
        return ((await this.reply(c, 'joined')) as Extract<FromChild, { t: 'joined' }>).result
      }),
    )
    return { syncMs: parts.flatMap((p) => p.syncMs), failures: parts.flatMap((p) => p.failures) }
  }

  /** Closes every client and ends the children (SIGKILL after 10 s). */
  async close(): Promise<void> {
    await Promise.all(
      this.children.map(async (c) => {
        const p = c.process
        if (p.exitCode !== null || p.signalCode !== null) return
        const gone = new Promise<void>((r) => p.once('exit', () => r()))
        if (p.connected) p.send({ t: 'close' } satisfies ToChild)
        const timer = setTimeout(() => p.kill('SIGKILL'), 10_000)
        await gone
        clearTimeout(timer)
      }),
    )
  }

  private reply(c: ChildState, want: FromChild['t']): Promise<FromChild> {
    return new Promise((resolve, reject) =>
      c.waiters.push((m) => (m.t === want ? resolve(m) : reject(new Error(m.t === 'error' ? m.message : `crowd child sent ${m.t}, expected ${want}`)))),
    )
  }
}

// ---------------------------------------------------------------- child side

const wallNow = () => performance.timeOrigin + performance.now()

function runChild(): void {
  // Each stock y-websocket provider adds a process 'exit' listener: hundreds per child.
  process.setMaxListeners(0)
  const send = (m: FromChild) => {
    if (process.connected) process.send?.(m)
  }
  const clients: Client[] = []
  const received: number[] = []
  let writer: Client | undefined
  const sentWallMs: number[] = []
  let late = 0
  let ticker: NodeJS.Timeout | undefined

  const make = (plan: { wsUrl: string; client: ClientKind; docId: string; params: Record<string, string> }) => {
    const f = plan.client === 'hocuspocus' ? hocuspocusClient : yWebsocketClient
    return f(plan.wsUrl, { docId: plan.docId, params: plan.params })
  }
  /** `p`, or a rejection after `ms` (the timer is cleared when `p` settles first). */
  const withTimeout = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms)
      p.then(
        (v) => (clearTimeout(timer), resolve(v)),
        (err: unknown) => (clearTimeout(timer), reject(err)),
      )
    })

  /** Notes the receive time of every remote edit `c` sees for the first time. */
  const observe = (c: Client) => {
    const counted = new Map<number, number>()
    c.doc.on('update', (update: Uint8Array, origin: unknown) => {
      if (origin === null) return
      const now = wallNow()
      const meta = Y.parseUpdateMeta(update)
      for (const [client, to] of meta.to) {
        const from = Math.max(meta.from.get(client) ?? 0, counted.get(client) ?? 0)
        if (from >= to) continue
        counted.set(client, to)
        for (let clock = from; clock < to; clock++) received.push(clock, now)
      }
    })
  }

  process.on('message', (m: ToChild) => {
    try {
      switch (m.t) {
        case 'observe': {
          for (let i = 0; i < m.observers; i++) {
            const c = make(m.plan)
            // Silent observers: no presence. A stock provider re-sends its presence every 15 s
            // and echoes every remote presence change back to the server; with 1,500 clients
            // that is ~150,000 echo frames/s from the driver, more than this box has.
            c.awareness.setLocalState(null)
            observe(c)
            clients.push(c)
          }
          if (m.writer) writer = make(m.plan)
          const all = [...clients, ...(writer ? [writer] : [])].map((c) => c.synced)
          withTimeout(Promise.all(all), m.plan.connectTimeoutMs, `not every client synced`).then(
            () => send({ t: 'ready' }),
            (err: Error) => send({ t: 'error', message: err.message }),
          )
          break
        }
        case 'type': {
          const w = writer!
          const periodMs = 1_000 / m.opsPerS
          let due = performance.now()
          // A steady schedule that catches up after a stall (open loop).
          const tick = () => {
            const now = performance.now()
            while (due <= now) {
              if (now - due > 50) late++
              sentWallMs[w.sent] = wallNow()
              w.text.insert(w.text.length, String.fromCharCode(97 + (w.sent % 26)))
              w.sent++
              due += periodMs
            }
            ticker = setTimeout(tick, Math.max(1, due - performance.now()))
          }
          tick()
          break
        }
        case 'stop-typing':
          clearTimeout(ticker)
          send({ t: 'writer', result: { sentWallMs, text: writer!.text.toString(), late } })
          break
        case 'check': {
          const deadline = performance.now() + m.timeoutMs
          const check = () => {
            const bad = clients.filter((c) => c.text.toString() !== m.text)
            if (bad.length > 0 && performance.now() < deadline) return void setTimeout(check, 200)
            const failures = bad.slice(0, 3).map((c) => `observer text length ${c.text.length}, writer's ${m.text.length}`)
            send({ t: 'observed', result: { received, observers: clients.length, converged: clients.length - bad.length, failures } })
          }
          check()
          break
        }
        case 'join': {
          const syncMs: number[] = []
          const failures: string[] = []
          const joins = Array.from({ length: m.joiners }, async () => {
            const t0 = performance.now()
            const c = make(m.plan)
            try {
              await withTimeout(c.synced, m.plan.connectTimeoutMs, 'not synced')
              // The sync step 2 holds the whole doc; wait for the text in case it came in parts.
              while (c.text.length < m.expectLength && performance.now() - t0 < m.plan.connectTimeoutMs) await new Promise((r) => setTimeout(r, 5))
              if (c.text.length !== m.expectLength) failures.push(`joiner synced with ${c.text.length} of ${m.expectLength} characters`)
              else syncMs.push(performance.now() - t0)
            } catch (err) {
              failures.push((err as Error).message)
            } finally {
              c.destroy() // 150 copies of a 20 MB doc would not fit in one child
            }
          })
          Promise.all(joins).then(
            () => send({ t: 'joined', result: { syncMs, failures } }),
            (err: Error) => send({ t: 'error', message: err.message }),
          )
          break
        }
        case 'ping':
          send({ t: 'ready' })
          break
        case 'close':
          clearTimeout(ticker)
          for (const c of clients) c.destroy()
          writer?.destroy()
          process.disconnect()
          setTimeout(() => process.exit(0), 100)
          break
      }
    } catch (err) {
      send({ t: 'error', message: `crowd child: ${(err as Error).stack ?? String(err)}` })
    }
  })
  // The parent went away (Ctrl-C, crash): do not linger.
  process.on('disconnect', () => setTimeout(() => process.exit(0), 200))
}

if (process.argv[1] === fileURLToPath(import.meta.url)) runChild()
