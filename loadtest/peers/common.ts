// Helpers the system launchers share: free ports, a process's whole tree, and matching sampled
// edits to the time storage held them.
import { type ChildProcess } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as Y from 'yjs'
import { exited, freePort } from '../../scripts/lib/proc.ts'
import { portFree } from '../../scripts/lib/single-instance.ts'
import { descendants } from '../proc-stats.ts'
import type { EditSample, PersistedLatency } from '../systems.ts'

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `bench-${prefix}-`))
}

/**
 * Free ports in blocks, all distinct: block i is `sizes[i]` ports counting down from its first
 * (npm start's extra edges take EDGE_PORT - i and EDGE_OPS_PORT - i). Returns each block's first.
 */
export async function freePortBlocks(sizes: number[]): Promise<number[]> {
  const taken = new Set<number>()
  const firsts: number[] = []
  for (const size of sizes) {
    for (;;) {
      const first = await freePort()
      const block = Array.from({ length: size }, (_, i) => first - i)
      if (block.some((p) => p < 1_024 || taken.has(p))) continue
      if (!(await Promise.all(block.slice(1).map(portFree))).every(Boolean)) continue
      for (const p of block) taken.add(p)
      firsts.push(first)
      break
    }
  }
  return firsts
}

/** Polls `url` until it answers 200; fails early when `child` exits. */
export async function waitHealthy(url: string, child: ChildProcess, timeoutMs: number, logHint: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`server exited (${child.exitCode ?? child.signalCode}) before ${url} answered; ${logHint}`)
    const ok = await fetch(url).then((r) => r.ok, () => false)
    if (ok) return
    await new Promise((r) => setTimeout(r, 200))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${url}; ${logHint}`)
}

/** SIGKILLs every pid still alive (after a graceful stop did not finish). */
export function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err
    }
  }
}

/** Sends `signal` to `child`, waits up to `graceMs`, then SIGKILLs it and every descendant left. */
export async function stopTree(child: ChildProcess, signal: NodeJS.Signals, graceMs: number, extraPids: () => number[] = () => []): Promise<void> {
  const tree = () => [...(child.pid ? descendants([child.pid]) : []), ...extraPids()]
  if (child.exitCode === null && child.signalCode === null) {
    child.kill(signal)
    const timedOut = await Promise.race([exited(child).then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), graceMs).unref())])
    if (timedOut) killAll(tree())
  }
  // Whatever the graceful stop left (a stray child, a postmaster) goes too.
  killAll(tree())
}

/** A stored update (or state) and when storage held it, ms since the epoch. */
export interface StoredUpdate {
  docId: string
  storedWallMs: number
  update: Uint8Array
}

/** Per doc and writer, the earliest time storage held each clock. */
export function storedTimes(stored: Iterable<StoredUpdate>, docs: Set<string>): Map<string, number> {
  const at = new Map<string, number>()
  for (const s of stored) {
    if (!docs.has(s.docId)) continue
    const meta = Y.parseUpdateMeta(s.update)
    for (const [client, to] of meta.to) {
      for (let clock = meta.from.get(client) ?? 0; clock < to; clock++) {
        const k = `${s.docId}\0${client}\0${clock}`
        const prev = at.get(k)
        if (prev === undefined || s.storedWallMs < prev) at.set(k, s.storedWallMs)
      }
    }
  }
  return at
}

export const sampleKey = (s: EditSample) => `${s.docId}\0${s.client}\0${s.clock}`

/** p50 / max of stored − sent over the samples `storedAt` knows. */
export function persistedFrom(samples: EditSample[], storedAt: (s: EditSample) => number | undefined): PersistedLatency {
  const lat: number[] = []
  let missing = 0
  for (const s of samples) {
    const t = storedAt(s)
    if (t === undefined) missing++
    else lat.push(t - s.sentWallMs)
  }
  lat.sort((a, b) => a - b)
  return { n: lat.length, missing, p50Ms: quantile(lat, 0.5), maxMs: lat.length ? lat[lat.length - 1]! : NaN }
}

/** q-quantile of sorted values (nearest rank); NaN when empty. */
export function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!
}

/** Asks a peer server's launcher (over IPC) for what its storage holds of `docs`: [doc, time, update hex]. */
export function storedOverIpc(child: ChildProcess, docs: string[]): Promise<[string, number, string][]> {
  return new Promise((resolve, reject) => {
    const on = (m: { t: string; stored: [string, number, string][] }) => {
      if (m?.t !== 'stored') return
      child.off('message', on)
      resolve(m.stored)
    }
    child.on('message', on)
    child.send({ t: 'stored', docs }, (err) => err && reject(err))
  })
}
