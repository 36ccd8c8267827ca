// The typing-storm load driver. The parent side (DriverFleet) forks one child per
// `docsPerChild` docs so the driver is not the bottleneck; each child holds both stock clients
// of each of its docs, so send and receive times come from one clock.
// Invariant: an edit counts as received once per peer, by its writer's (clientID, clock); its
// fanout latency is the peer's receive time − the writer's insert time, both performance.now()
// of the same process.
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import type { ClientKind, EditSample } from './systems.ts'

export interface DriverDoc {
  docId: string
  params: Record<string, string>
  /** The server each of the doc's two clients connects to (several edges: two different ones). Default the plan's wsUrl for both. */
  wsUrls?: [string, string]
}

export interface DriverPlan {
  wsUrl: string
  client: ClientKind
  docs: DriverDoc[]
  /** Inserts per second per client (each doc has 2 clients). Default 5. */
  opsPerClientPerS?: number
  /** Every n-th doc's edits in the window are sampled for the persisted latency. Default 10. */
  sampleEvery?: number
  /** Docs per child process. Default 250. */
  docsPerChild?: number
  /** How long to wait for every client to connect and sync. Default 120_000. */
  connectTimeoutMs?: number
}

export interface DriverResult {
  /** Edits inserted inside the window. */
  sentInWindow: number
  /** Edits the peers received inside the window. */
  receivedInWindow: number
  /** Edits inserted / received over the whole run (warm-up and drain included). */
  sentTotal: number
  receivedTotal: number
  /** Fanout latency of each edit typed in the window, ms, whenever it arrived (before the convergence check ended). */
  fanoutMs: number[]
  samples: EditSample[]
  docs: number
  /** Docs whose two clients ended with equal texts holding every edit both typed. */
  converged: number
  /** What went wrong in the docs that did not converge (the first few). */
  failures: string[]
}

type ToChild =
  | { t: 'init'; plan: Required<Omit<DriverPlan, 'docs' | 'docsPerChild'>>; docs: DriverDoc[]; firstDocIndex: number }
  | { t: 'type' }
  | { t: 'window'; open: boolean }
  | { t: 'finish'; quiesceTimeoutMs: number }
  | { t: 'close' }

type FromChild =
  | { t: 'ready' }
  | { t: 'error'; message: string }
  | { t: 'progress'; sent: number; received: number; receivedInWindow: number }
  | { t: 'result'; result: DriverResult }

// ---------------------------------------------------------------- parent side

interface ChildState {
  process: ChildProcess
  progress: { sent: number; received: number; receivedInWindow: number }
  waiters: ((m: FromChild) => void)[]
}

/** The driver's child processes, driven through one timeline: spawn → type → window → finish → close. */
export class DriverFleet {
  private constructor(private readonly children: ChildState[]) {}

  /** Forks the children, connects every client and waits until all are synced. */
  static async spawn(plan: DriverPlan): Promise<DriverFleet> {
    const full = { opsPerClientPerS: 5, sampleEvery: 10, connectTimeoutMs: 120_000, ...plan }
    const perChild = plan.docsPerChild ?? 250
    const children: ChildState[] = []
    const fleet = new DriverFleet(children)
    try {
      for (let i = 0; i < plan.docs.length; i += perChild) {
        const child = fork(fileURLToPath(import.meta.url), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
        const state: ChildState = { process: child, progress: { sent: 0, received: 0, receivedInWindow: 0 }, waiters: [] }
        child.on('message', (m: FromChild) => {
          if (m.t === 'progress') state.progress = m
          else state.waiters.shift()?.(m)
        })
        child.on('exit', (code, signal) => {
          for (const w of state.waiters.splice(0)) w({ t: 'error', message: `driver child exited (${code ?? signal})` })
        })
        children.push(state)
        const { wsUrl, client, opsPerClientPerS, sampleEvery, connectTimeoutMs } = full
        child.send({ t: 'init', plan: { wsUrl, client, opsPerClientPerS, sampleEvery, connectTimeoutMs }, docs: plan.docs.slice(i, i + perChild), firstDocIndex: i } satisfies ToChild)
      }
      await Promise.all(children.map((c) => fleet.reply(c, 'ready')))
    } catch (err) {
      await fleet.close()
      throw err
    }
    return fleet
  }

  pids(): number[] {
    return this.children.flatMap((c) => (c.process.pid ? [c.process.pid] : []))
  }

  startTyping(): void {
    this.broadcast({ t: 'type' })
  }

  /** Opens (true) or closes (false) the measurement window. */
  window(open: boolean): void {
    this.broadcast({ t: 'window', open })
  }

  /** Sums of the children's last progress reports (about once a second). */
  progress(): { sent: number; received: number; receivedInWindow: number } {
    const sum = { sent: 0, received: 0, receivedInWindow: 0 }
    for (const c of this.children) {
      sum.sent += c.progress.sent
      sum.received += c.progress.received
      sum.receivedInWindow += c.progress.receivedInWindow
    }
    return sum
  }

  /** Stops typing, waits for every doc to converge (or the timeout) and merges the results. */
  async finish(quiesceTimeoutMs = 30_000): Promise<DriverResult> {
    this.broadcast({ t: 'finish', quiesceTimeoutMs })
    const parts = await Promise.all(this.children.map((c) => this.reply(c, 'result')))
    const merged: DriverResult = { sentInWindow: 0, receivedInWindow: 0, sentTotal: 0, receivedTotal: 0, fanoutMs: [], samples: [], docs: 0, converged: 0, failures: [] }
    for (const m of parts) {
      const r = (m as Extract<FromChild, { t: 'result' }>).result
      merged.sentInWindow += r.sentInWindow
      merged.receivedInWindow += r.receivedInWindow
      merged.sentTotal += r.sentTotal
      merged.receivedTotal += r.receivedTotal
      for (const x of r.fanoutMs) merged.fanoutMs.push(x)
      for (const s of r.samples) merged.samples.push(s)
      merged.docs += r.docs
      merged.converged += r.converged
      merged.failures.push(...r.failures)
    }
    return merged
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

  private broadcast(m: ToChild): void {
    for (const c of this.children) if (c.process.connected) c.process.send(m)
  }

  private reply(c: ChildState, want: FromChild['t']): Promise<FromChild> {
    return new Promise((resolve, reject) =>
      c.waiters.push((m) => (m.t === want ? resolve(m) : reject(new Error(m.t === 'error' ? m.message : `driver child sent ${m.t}, expected ${want}`)))),
    )
  }
}

// ---------------------------------------------------------------- child side

export interface Client {
  doc: Y.Doc
  text: Y.Text
  /** Edits this client inserted (its next clock: single-char inserts, nothing else). */
  sent: number
  /** performance.now() when its next edit is due. */
  nextDueMs: number
  synced: Promise<void>
  /** The provider's awareness (presence); loadtest/scenarios/ clears it for silent observers. */
  awareness: { setLocalState(state: null): void }
  destroy(): void
}

interface Pair {
  docId: string
  sampled: boolean
  clients: [Client, Client]
}

/** A stock y-websocket provider on `d` (also used by loadtest/scenarios/). */
export function yWebsocketClient(wsUrl: string, d: DriverDoc): Client {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(wsUrl, d.docId, doc, { params: d.params, WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket, disableBc: true })
  const synced = new Promise<void>((resolve) => {
    const on = (s: boolean) => {
      if (!s) return
      provider.off('sync', on)
      resolve()
    }
    provider.on('sync', on)
  })
  return { doc, text: doc.getText('t'), sent: 0, nextDueMs: 0, synced, awareness: provider.awareness, destroy: () => (provider.destroy(), doc.destroy()) }
}

/** A stock HocuspocusProvider on `d` (also used by loadtest/scenarios/). */
export function hocuspocusClient(wsUrl: string, d: DriverDoc): Client {
  const doc = new Y.Doc()
  const socket = new HocuspocusProviderWebsocket({ url: wsUrl, WebSocketPolyfill: WebSocket })
  const provider = new HocuspocusProvider({ websocketProvider: socket, name: d.docId, document: doc, token: d.params.token ?? null })
  provider.attach()
  const synced = new Promise<void>((resolve) => provider.on('synced', () => resolve()))
  return { doc, text: doc.getText('t'), sent: 0, nextDueMs: 0, synced, awareness: provider.awareness!, destroy: () => (provider.destroy(), socket.destroy(), doc.destroy()) }
}

/** How often a child checks which clients are due to type. */
const TICK_MS = 5

function runChild(): void {
  // Each stock y-websocket provider adds a process 'exit' listener: hundreds per child.
  process.setMaxListeners(0)
  const send = (m: FromChild) => {
    if (process.connected) process.send?.(m)
  }
  /** Writer clientID → performance.now() of each of its edits, indexed by clock. */
  const sentAt = new Map<number, number[]>()
  const pairs: Pair[] = []
  let plan: Extract<ToChild, { t: 'init' }>['plan']
  let typing = false
  let inWindow = false
  const counts = { sent: 0, received: 0, sentInWindow: 0, receivedInWindow: 0 }
  const fanoutMs: number[] = []
  /**
   * Writer clientID → the clocks it typed inside the window ([from, to); to is Infinity while it is
   * open). Their fanout is measured whenever they arrive, the window closed or not: an edit typed
   * in the window and delivered after it is a slow one, not one to leave out.
   */
  const typedInWindow = new Map<number, { from: number; to: number }>()
  const samples: EditSample[] = []
  let ticker: NodeJS.Timeout | undefined

  /** Counts the edits of the other client that `update` brings to `self` for the first time. */
  const onReceive = (self: Client) => {
    /** Writer clientID → clocks below this were counted already. */
    const counted = new Map<number, number>()
    self.doc.on('update', (update: Uint8Array, origin: unknown) => {
      if (origin === null) return // our own insert
      const now = performance.now()
      const meta = Y.parseUpdateMeta(update)
      for (const [client, to] of meta.to) {
        if (client === self.doc.clientID) continue
        const from = Math.max(meta.from.get(client) ?? 0, counted.get(client) ?? 0)
        if (from >= to) continue
        counted.set(client, to)
        const times = sentAt.get(client)
        counts.received += to - from
        if (inWindow) counts.receivedInWindow += to - from
        const typed = typedInWindow.get(client)
        if (!typed) continue
        for (let clock = Math.max(from, typed.from); clock < Math.min(to, typed.to); clock++) {
          const t = times?.[clock]
          if (t !== undefined) fanoutMs.push(Math.round((now - t) * 100) / 100)
        }
      }
    })
  }

  const type = (c: Client, pair: Pair) => {
    if (!typing) return
    const clock = c.sent++
    const now = performance.now()
    sentAt.get(c.doc.clientID)![clock] = now
    c.text.insert(c.text.length, String.fromCharCode(97 + (clock % 26)))
    counts.sent++
    if (!inWindow) return
    counts.sentInWindow++
    if (pair.sampled) samples.push({ docId: pair.docId, client: c.doc.clientID, clock, sentWallMs: performance.timeOrigin + now })
  }

  /** Why `pair` has not converged, or undefined when it has. */
  const divergence = (pair: Pair): string | undefined => {
    const [a, b] = pair.clients
    const want = a.sent + b.sent
    const ta = a.text.toString()
    const tb = b.text.toString()
    if (ta.length !== want || tb.length !== want) return `${pair.docId}: lengths ${ta.length} / ${tb.length}, typed ${want}`
    if (ta !== tb) return `${pair.docId}: texts differ`
    return undefined
  }

  process.on('message', (m: ToChild) => {
    try {
      switch (m.t) {
        case 'init': {
          plan = m.plan
          const make = plan.client === 'hocuspocus' ? hocuspocusClient : yWebsocketClient
          m.docs.forEach((d, i) => {
            const pair: Pair = { docId: d.docId, sampled: (m.firstDocIndex + i) % plan.sampleEvery === 0, clients: [make(d.wsUrls?.[0] ?? plan.wsUrl, d), make(d.wsUrls?.[1] ?? plan.wsUrl, d)] }
            for (const c of pair.clients) {
              sentAt.set(c.doc.clientID, [])
              onReceive(c)
            }
            pairs.push(pair)
          })
          const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`not every client synced within ${plan.connectTimeoutMs} ms`)), plan.connectTimeoutMs).unref())
          Promise.race([Promise.all(pairs.flatMap((p) => p.clients.map((c) => c.synced))), timeout]).then(
            () => send({ t: 'ready' }),
            (err: Error) => send({ t: 'error', message: err.message }),
          )
          setInterval(() => send({ t: 'progress', sent: counts.sent, received: counts.received, receivedInWindow: counts.receivedInWindow }), 1_000).unref()
          break
        }
        case 'type': {
          typing = true
          const periodMs = 1_000 / plan.opsPerClientPerS
          const t0 = performance.now()
          // Jittered start, then a steady schedule that catches up after a stall (open loop:
          // the offered rate holds even when this process was starved of CPU for a moment).
          for (const pair of pairs) for (const c of pair.clients) c.nextDueMs = t0 + Math.random() * periodMs
          const tick = () => {
            if (!typing) return
            const now = performance.now()
            for (const pair of pairs) {
              for (const c of pair.clients) {
                while (c.nextDueMs <= now && typing) {
                  type(c, pair)
                  c.nextDueMs += periodMs
                }
              }
            }
            ticker = setTimeout(tick, TICK_MS)
          }
          tick()
          break
        }
        case 'window':
          inWindow = m.open
          for (const pair of pairs) {
            for (const c of pair.clients) {
              if (m.open) typedInWindow.set(c.doc.clientID, { from: c.sent, to: Infinity })
              else typedInWindow.get(c.doc.clientID)!.to = c.sent
            }
          }
          break
        case 'finish': {
          typing = false
          clearTimeout(ticker)
          const deadline = performance.now() + m.quiesceTimeoutMs
          const check = () => {
            const bad = pairs.map(divergence).filter((x): x is string => x !== undefined)
            if (bad.length > 0 && performance.now() < deadline) return void setTimeout(check, 200)
            send({
              t: 'result',
              result: {
                sentInWindow: counts.sentInWindow,
                receivedInWindow: counts.receivedInWindow,
                sentTotal: counts.sent,
                receivedTotal: counts.received,
                fanoutMs,
                samples,
                docs: pairs.length,
                converged: pairs.length - bad.length,
                failures: bad.slice(0, 5),
              },
            })
          }
          check()
          break
        }
        case 'close':
          for (const p of pairs) for (const c of p.clients) c.destroy()
          process.disconnect()
          setTimeout(() => process.exit(0), 100)
          break
      }
    } catch (err) {
      send({ t: 'error', message: `driver child: ${(err as Error).stack ?? String(err)}` })
    }
  })
  // The parent went away (Ctrl-C, crash): do not linger.
  process.on('disconnect', () => setTimeout(() => process.exit(0), 200))
}

if (process.argv[1] === fileURLToPath(import.meta.url)) runChild()
