// The join scenario: one client writes a document of ~N MB (Y.encodeStateAsUpdate bytes) through
// the server in chunks of CHUNK_CHARS characters (each chunk one update, well under DocFlow's frame
// limit and nats max_payload), waits until the server holds every edit in storage
// (system.storedUpTo, else persistedLatency, of its last clock), and leaves; once nobody is connected (the room closed / the doc
// unloaded), J clients join at once. Time to synced = a joiner's provider created → its 'sync' /
// 'synced' event with the whole text (its length checked).
import { setTimeout as sleep } from 'node:timers/promises'
import * as Y from 'yjs'
import { hocuspocusClient, yWebsocketClient } from '../driver.ts'
import { quantile } from '../peers/common.ts'
import { ProcSampler, type ProcReport } from '../proc-stats.ts'
import type { RunningSystem } from '../systems.ts'
import { Crowd } from './crowd.ts'

/** Characters (= bytes, ASCII) per update the builder sends. */
const CHUNK_CHARS = 512 * 1024
/** After the builder left: time for the server to close the room / store and unload the doc. */
const SETTLE_MS = 2_000

export interface JoinOptions {
  joiners: number
  /** Document size, MB (10^6 bytes) of Y.encodeStateAsUpdate. */
  docMb: number
  say?: (line: string) => void
}

export interface JoinScenarioResult {
  system: string
  label: string
  joiners: number
  docBytes: number
  /** Builder: first chunk → last edit in storage, s. */
  buildS: number
  synced: number
  syncMs: { p50: number; p95: number; max: number }
  failures: string[]
  server: ProcReport
  driver: ProcReport
}

/** Writes ~`docMb` MB into `docId` through `system`; returns the text length and state bytes. */
async function buildDoc(system: RunningSystem, docId: string, docMb: number, say: (line: string) => void): Promise<{ length: number; bytes: number }> {
  const make = system.client === 'hocuspocus' ? hocuspocusClient : yWebsocketClient
  const builder = make(system.wsUrl, { docId, params: system.params(docId) })
  try {
    await builder.synced
    const target = docMb * 1_000_000
    const pattern = 'the quick brown fox jumps over the lazy dog 0123456789\n'
    const chunk = pattern.repeat(Math.ceil(CHUNK_CHARS / pattern.length)).slice(0, CHUNK_CHARS)
    // The state is the text plus a few bytes per item: add chunks until the encoded state reaches the target.
    while (builder.text.length + CHUNK_CHARS <= target) {
      builder.text.insert(builder.text.length, chunk)
      await sleep(20) // let the socket drain between chunks
    }
    const rest = target - Y.encodeStateAsUpdate(builder.doc).length
    if (rest > 0) builder.text.insert(builder.text.length, chunk.slice(0, rest))
    const bytes = Y.encodeStateAsUpdate(builder.doc).length
    const length = builder.text.length
    say(`${system.name} join: wrote ${length.toLocaleString('en-US')} characters (${bytes.toLocaleString('en-US')} bytes of state); waiting until storage holds the last edit`)
    const last = { docId, client: builder.doc.clientID, clock: length - 1, sentWallMs: performance.timeOrigin + performance.now() }
    const stored = system.storedUpTo ? await system.storedUpTo(docId, last.client, last.clock) : (await system.persistedLatency([last])).missing === 0
    if (!stored) throw new Error(`${system.name}: the ${docMb} MB doc's last edit was not in storage 30 s after it was written`)
    return { length, bytes }
  } finally {
    builder.destroy()
  }
}

export async function joinScenario(system: RunningSystem, o: JoinOptions): Promise<JoinScenarioResult> {
  const say = o.say ?? (() => {})
  const docId = `join-${o.docMb}mb`
  say(`${system.name} join: building a ${o.docMb} MB doc`)
  const b0 = performance.now()
  const doc = await buildDoc(system, docId, o.docMb, say)
  const buildS = (performance.now() - b0) / 1_000
  await sleep(SETTLE_MS)
  // The joiners find the document in storage only, as Hocuspocus's do once it unloaded it: not
  // in a core worker's cache, where building it left it.
  if (system.docflow) {
    say(`${system.name} join: restarting core (empty caches)`)
    await system.docflow.restartCore()
  }
  const crowd = await Crowd.forJoin(o.joiners)
  try {
    say(`${system.name} join: ${o.joiners} clients join at once`)
    const server = new ProcSampler({ pids: () => system.serverPids(), everyMs: 250, trackPss: true })
    const driver = new ProcSampler({ pids: () => crowd.pids(), everyMs: 250 })
    server.start()
    driver.start()
    const r = await crowd.join({ wsUrl: system.wsUrl, client: system.client, docId, params: system.params(docId) }, o.joiners, doc.length)
    const serverReport = server.stop()
    const driverReport = driver.stop()
    const lat = r.syncMs.sort((a, b) => a - b)
    if (r.failures.length > 0) say(`${system.name} join: ${r.failures.length} of ${o.joiners} joiners failed: ${[...new Set(r.failures)].slice(0, 3).join('; ')}`)
    return {
      system: system.name,
      label: system.label,
      joiners: o.joiners,
      docBytes: doc.bytes,
      buildS,
      synced: lat.length,
      syncMs: { p50: quantile(lat, 0.5), p95: quantile(lat, 0.95), max: lat.length ? lat[lat.length - 1]! : NaN },
      failures: r.failures,
      server: serverReport,
      driver: driverReport,
    }
  } finally {
    await crowd.close()
  }
}
