// Hocuspocus (@hocuspocus/server + its Database extension) on its own PostgreSQL cluster,
// started with the project's scripts/lib/postgres.ts exactly as DocFlow's (same settings), so
// each system's PostgreSQL CPU is its own. Clients: HocuspocusProvider.
import { fork } from 'node:child_process'
import { openSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as Y from 'yjs'
import { startPostgres } from '../../scripts/lib/postgres.ts'
import { descendants } from '../proc-stats.ts'
import type { EditSample, RunningSystem, StartOptions } from '../systems.ts'
import { persistedFrom, stopTree, tempDir, storedOverIpc, waitHealthy } from './common.ts'
import { freePorts } from '../../scripts/lib/proc.ts'

const SERVER = fileURLToPath(new URL('./hocuspocus-server.ts', import.meta.url))
const VERSION = (JSON.parse(readFileSync(fileURLToPath(new URL('../../node_modules/@hocuspocus/server/package.json', import.meta.url)), 'utf8')) as { version: string }).version
/** Hocuspocus stores 2 s after the last change (10 s at most): wait past that. */
const PERSIST_WAIT_MS = 30_000

export async function startHocuspocus(options: StartOptions): Promise<RunningSystem> {
  const dir = tempDir('hocuspocus')
  const [port, pgPort] = await freePorts(2)
  options.say?.(`starting PostgreSQL and Hocuspocus in ${dir}`)
  const postgres = await startPostgres({ dir: join(dir, 'pg'), port: pgPort!, ownProcessGroup: true })
  const log = join(dir, 'hocuspocus.log')
  const child = fork(SERVER, [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, HOCUSPOCUS_PORT: String(port), DATABASE_URL: postgres.url },
    stdio: ['ignore', openSync(log, 'a'), openSync(log, 'a'), 'ipc'],
    detached: true,
  })
  const postmaster = postgres.process.pid
  const stop = async () => {
    await stopTree(child, 'SIGTERM', 15_000)
    await postgres.stop()
    rmSync(dir, { recursive: true, force: true })
    if (postgres.clusterDir !== join(dir, 'pg')) rmSync(postgres.clusterDir, { recursive: true, force: true })
  }
  try {
    await waitHealthy(`http://127.0.0.1:${port}/`, child, 60_000, `log: ${log}`)
  } catch (err) {
    await stop()
    throw err
  }
  const stored = (docs: string[]) => storedOverIpc(child, docs)
  return {
    name: 'Hocuspocus',
    // Default debounce: the state is stored 2 s after the last change, at the latest 10 s after the first.
    label: `Hocuspocus ${VERSION} + PostgreSQL (state 2 s after a pause, ≤ 10 s)`,
    client: 'hocuspocus',
    wsUrl: `ws://127.0.0.1:${port}`,
    params: () => ({}),
    serverPids: () => [...(child.pid ? descendants([child.pid]) : []), ...(postmaster ? descendants([postmaster]) : [])],
    logsDir: dir,
    stop,
    persistedLatency: async (samples: EditSample[]) => {
      const docs = [...new Set(samples.map((s) => s.docId))]
      const deadline = Date.now() + PERSIST_WAIT_MS
      for (;;) {
        /** Per doc, its stores in time order with their state vectors. */
        const byDoc = new Map<string, { t: number; sv: Map<number, number> }[]>()
        for (const [doc, t, sv] of await stored(docs)) {
          const list = byDoc.get(doc) ?? byDoc.set(doc, []).get(doc)!
          list.push({ t, sv: Y.decodeStateVector(Buffer.from(sv, 'base64')) })
        }
        for (const list of byDoc.values()) list.sort((a, b) => a.t - b.t)
        const result = persistedFrom(samples, (s) => byDoc.get(s.docId)?.find((x) => (x.sv.get(s.client) ?? 0) > s.clock)?.t)
        if (result.missing === 0 || Date.now() > deadline) return result
        await new Promise((r) => setTimeout(r, 1_000))
      }
    },
  }
}
