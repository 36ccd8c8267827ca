// The idle-sockets scenario (DocFlow): N authenticated sockets that connect, get the edge's
// first sync frame and then stay idle, spread over D documents, all on ONE edge process.
// Reports the edge's memory per socket ((PSS with the sockets − PSS before) / N, rooms
// included) and the connect rate (sockets answered per second, opened WAVE at a time).
import WebSocket from 'ws'
import { setTimeout as sleep } from 'node:timers/promises'
import { memoryKb, roleOf } from '../proc-stats.ts'
import { readStat } from '../../scripts/lib/proc.ts'
import type { RunningSystem } from '../systems.ts'

export interface IdleOptions {
  sockets: number
  /** Documents the sockets spread over. Default sockets / 10. */
  docs?: number
  say?: (line: string) => void
}

export interface IdleResult {
  sockets: number
  docs: number
  connected: number
  failed: number
  /** Why the first few failed. */
  failures: string[]
  connectS: number
  perSecond: number
  edgePssBeforeMb: number
  edgePssAfterMb: number
  perSocketKb: number
}

/** Sockets opening at once; the next one opens as each is answered. */
const WAVE = 500
/** Longest a socket may take to be answered. */
const CONNECT_TIMEOUT_MS = 30_000

export async function idleScenario(system: RunningSystem, o: IdleOptions): Promise<IdleResult> {
  const say = o.say ?? (() => {})
  const docs = o.docs ?? Math.max(1, Math.round(o.sockets / 10))
  const edges = system.serverPids().filter((pid) => roleOf(pid, readStat(pid)?.comm ?? '') === 'edge')
  if (edges.length !== 1) throw new Error(`the idle scenario needs exactly one edge process, found ${edges.length}`)
  const edgePid = edges[0]!
  await sleep(2_000) // let the freshly started edge settle
  const before = memoryKb(edgePid).pssKb
  say(`${system.name} idle: opening ${o.sockets.toLocaleString('en-US')} sockets on ${docs.toLocaleString('en-US')} docs, ${WAVE} at a time`)
  const sockets: WebSocket[] = []
  let connected = 0
  let failed = 0
  const failures: string[] = []
  const t0 = performance.now()
  let next = 0
  const openOne = (): Promise<void> => {
    if (next >= o.sockets) return Promise.resolve()
    const i = next++
    const docId = `idle-${i % docs}`
    const query = new URLSearchParams(system.params(docId)).toString()
    return new Promise<void>((resolve) => {
      const ws = new WebSocket(`${system.wsUrl}/${encodeURIComponent(docId)}?${query}`)
      sockets.push(ws)
      const timer = setTimeout(() => settle(`no answer in ${CONNECT_TIMEOUT_MS} ms`), CONNECT_TIMEOUT_MS)
      let settled = false
      const settle = (failure: string | null) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        if (failure === null) connected++
        else if (++failed <= 5) failures.push(`${docId}: ${failure}`)
        if ((connected + failed) % 2_000 === 0) say(`${system.name} idle: ${(connected + failed).toLocaleString('en-US')} answered`)
        resolve()
      }
      ws.once('message', () => settle(null))
      ws.once('close', (code, reason) => settle(`closed ${code} ${reason.toString()}`))
      ws.once('error', (err) => settle(err.message))
    }).then(openOne)
  }
  await Promise.all(Array.from({ length: Math.min(WAVE, o.sockets) }, openOne))
  const connectS = (performance.now() - t0) / 1_000
  await sleep(3_000)
  const after = memoryKb(edgePid).pssKb
  for (const ws of sockets) ws.terminate()
  return {
    sockets: o.sockets,
    docs,
    connected,
    failed,
    failures,
    connectS,
    perSecond: connected / connectS,
    edgePssBeforeMb: before / 1024,
    edgePssAfterMb: after / 1024,
    perSocketKb: connected > 0 ? (after - before) / connected : NaN,
  }
}
