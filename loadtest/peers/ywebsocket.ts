// The y-websocket 1.x reference server (npm alias y-websocket-reference) with LevelDB
// persistence, one process, run by loadtest/peers/ywebsocket-server.cjs. Its clients are the
// stock y-websocket 3.x provider: the same protocol.
import { fork } from 'node:child_process'
import { openSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { descendants } from '../proc-stats.ts'
import type { EditSample, RunningSystem, StartOptions } from '../systems.ts'
import { persistedFrom, sampleKey, stopTree, storedTimes, tempDir, storedOverIpc, waitHealthy } from './common.ts'
import { freePorts } from '../../scripts/lib/proc.ts'

const LAUNCHER = fileURLToPath(new URL('./ywebsocket-server.cjs', import.meta.url))
/** How long persistedLatency waits for LevelDB to hold every sample. */
const PERSIST_WAIT_MS = 30_000

export async function startYWebsocket(options: StartOptions): Promise<RunningSystem> {
  const dir = tempDir('ywebsocket')
  const [port] = await freePorts(1)
  const log = join(dir, 'server.log')
  options.say?.(`starting the y-websocket reference server in ${dir}`)
  const child = fork(LAUNCHER, [], {
    env: { ...process.env, HOST: '127.0.0.1', PORT: String(port), YPERSISTENCE: join(dir, 'leveldb') },
    stdio: ['ignore', openSync(log, 'a'), openSync(log, 'a'), 'ipc'],
    detached: true,
  })
  const stop = async () => {
    await stopTree(child, 'SIGTERM', 10_000)
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    await waitHealthy(`http://127.0.0.1:${port}/`, child, 30_000, `log: ${log}`)
  } catch (err) {
    await stop()
    throw err
  }
  /** Every write of the docs asked for that LevelDB has completed. */
  const stored = (docs: string[]) => storedOverIpc(child, docs)
  return {
    name: 'y-websocket reference',
    label: 'y-websocket reference (LevelDB, every update, no fsync)',
    client: 'y-websocket',
    wsUrl: `ws://127.0.0.1:${port}`,
    params: () => ({}),
    serverPids: () => (child.pid ? descendants([child.pid]) : []),
    logsDir: dir,
    stop,
    persistedLatency: async (samples: EditSample[]) => {
      const docs = [...new Set(samples.map((s) => s.docId))]
      const deadline = Date.now() + PERSIST_WAIT_MS
      for (;;) {
        const rows = await stored(docs)
        const at = storedTimes(rows.map(([docId, t, u]) => ({ docId, storedWallMs: t, update: Buffer.from(u, 'base64') })), new Set(docs))
        const result = persistedFrom(samples, (s) => at.get(sampleKey(s)))
        if (result.missing === 0 || Date.now() > deadline) return result
        await new Promise((r) => setTimeout(r, 500))
      }
    },
  }
}
