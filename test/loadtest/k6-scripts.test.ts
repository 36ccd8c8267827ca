import t from 'tap'
import { build } from 'esbuild'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import * as syncProtocol from 'y-protocols/sync'
import * as Y from 'yjs'
import * as yws from '../../loadtest/k6/lib/yws.js'

const K6 = fileURLToPath(new URL('../../loadtest/k6/', import.meta.url))

/** What the k6 modules the scripts import look like, enough to evaluate their init code. */
const K6_STUBS: Record<string, string> = {
  k6: 'export const check = () => true; export const fail = (m) => { throw new Error(m) }; export const sleep = () => {}; export const group = (_n, f) => f()',
  'k6/ws': 'export default { connect: () => ({ status: 101 }) }',
  'k6/metrics': 'class M { constructor(name) { this.name = name } add() {} }; export class Trend extends M {}; export class Counter extends M {}; export class Rate extends M {}; export class Gauge extends M {}',
}

/** Bundles a k6 script with the stubs (its local modules included) and imports it as k6's init context would run it. */
async function loadScript(name: string, env: Record<string, string> = {}): Promise<Record<string, unknown>> {
  const out = await build({
    entryPoints: [join(K6, name)],
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    write: false,
    logLevel: 'silent',
    plugins: [
      {
        name: 'k6-stubs',
        setup(b) {
          b.onResolve({ filter: /^k6(\/.*)?$/ }, (a) => ({ path: a.path, namespace: 'k6' }))
          b.onLoad({ filter: /.*/, namespace: 'k6' }, (a) => {
            const stub = K6_STUBS[a.path]
            if (stub === undefined) throw new Error(`the script imports ${a.path}, which the test has no stub for`)
            return { contents: stub, loader: 'js' }
          })
        },
      },
    ],
  })
  const dir = mkdtempSync(join(tmpdir(), 'k6-script-'))
  try {
    const file = join(dir, name.replace(/\.js$/, '.mjs'))
    writeFileSync(file, out.outputFiles[0]!.text)
    const g = globalThis as Record<string, unknown>
    g.__ENV = { WS_URL: 'ws://127.0.0.1:1', TOKEN: 'test-token', ...env }
    g.open = () => {
      throw new Error('open() called without TOKENS_FILE')
    }
    return (await import(pathToFileURL(file).href)) as Record<string, unknown>
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

interface Options {
  scenarios: Record<string, { executor: string; vus?: number; exec?: string }>
  thresholds: Record<string, string[]>
}

t.test('loadtest - the k6 scripts load as k6 would run them, with the scenarios and thresholds of the issue', async (t) => {
  const storm = await loadScript('typing-storm.js', { RATE: '5000' })
  const so = storm.options as Options
  t.equal(so.scenarios.typists?.executor, 'per-vu-iterations', 'typing: one VU per client for the whole run')
  t.equal(so.scenarios.typists?.vus, 1000, 'typing: RATE 5000 at 5 ops/s per client = 1000 clients')
  t.same(so.thresholds.fanout_ms, ['p(95)<50'], 'typing: fanout p95 < 50 ms')
  t.type(storm.default, 'function')

  const obs = await loadScript('observers.js', { OBSERVERS: '1500' })
  const oo = obs.options as Options
  t.equal(oo.scenarios.observers?.vus, 1500)
  t.equal(oo.scenarios.observers?.exec, 'observer')
  t.equal(oo.scenarios.writer?.vus, 1)
  t.equal(oo.scenarios.writer?.exec, 'writer')
  t.type(obs.observer, 'function')
  t.type(obs.writer, 'function')
  t.ok(oo.thresholds.fanout_ms?.includes('p(99)<44'), 'observers: fanout p99 < 44 ms (yhub)')
  t.same(oo.thresholds.observer_converged, ['rate==1'], 'observers: every observer holds every edit')

  const join_ = await loadScript('join.js', { JOINERS: '150' })
  const jo = join_.options as Options
  t.equal(jo.scenarios.joiners?.vus, 150)
  t.same(jo.thresholds.time_to_synced_ms, ['med<2000'], 'join: p50 time to synced < 2 s')
  t.same(jo.thresholds.joined_full_text, ['rate==1'])
  t.type(join_.setup, 'function')

  await t.rejects(loadScript('typing-storm.js', { TOKEN: '' }), /set TOKENS_FILE/, 'no token: one clear error')
})

/** Feeds one y-websocket message to the real y-protocols reader against `doc`; returns the sync message type. */
function receive(doc: Y.Doc, message: Uint8Array): number {
  const decoder = decoding.createDecoder(message)
  if (decoding.readVarUint(decoder) !== 0) throw new Error('not a sync message')
  return syncProtocol.readSyncMessage(decoder, encoding.createEncoder(), doc, 'k6')
}

t.test('loadtest - the k6 scripts\' hand-made y-websocket messages are what y-protocols and Yjs read', async (t) => {
  // Sync step 1 of an empty client: the server answers it with its whole state as step 2.
  const server = new Y.Doc()
  server.getText('t').insert(0, 'hello')
  const reply = encoding.createEncoder()
  encoding.writeVarUint(reply, 0) // the server frames its reply as a sync message
  const step1 = decoding.createDecoder(yws.syncStep1Empty())
  t.equal(decoding.readVarUint(step1), 0)
  t.equal(syncProtocol.readSyncMessage(step1, reply, server, 'k6'), syncProtocol.messageYjsSyncStep1)
  const client = new Y.Doc()
  t.equal(receive(client, encoding.toUint8Array(reply)), syncProtocol.messageYjsSyncStep2)
  t.equal(client.getText('t').toString(), 'hello', 'the step 2 it got back holds the server doc')

  // Typed single characters, each its own update message, chained on the writer's previous one.
  const doc = new Y.Doc()
  const typed = ['a', 'é', '€', yws.timeChar(1_764_150_000_123)]
  typed.forEach((ch: string, clock: number) => t.equal(receive(doc, yws.updateMessage(yws.insertUpdate(4242, clock, ch))), syncProtocol.messageYjsUpdate))
  t.equal(doc.getText('t').toString(), typed.join(''), 'every character, in order')
  t.same(Object.fromEntries(Y.decodeStateVector(Y.encodeStateVector(doc))), { 4242: typed.length }, 'one clock per character')
  t.equal(receive(doc, yws.syncStep2(yws.EMPTY_UPDATE)), syncProtocol.messageYjsSyncStep2, 'the empty step 2 reply reads')

  // A big chunk (the join's builder) and a large client id (varint above 2^31).
  const big = new Y.Doc()
  const chunk = 'x'.repeat(300_000)
  receive(big, yws.updateMessage(yws.insertUpdate(0xfffffff0, 0, chunk)))
  receive(big, yws.updateMessage(yws.insertUpdate(0xfffffff0, chunk.length, chunk)))
  t.equal(big.getText('t').length, 600_000)
})

t.test('loadtest - the k6 scripts read what a Yjs server sends', async (t) => {
  const writer = new Y.Doc()
  const updates: Uint8Array[] = []
  writer.on('update', (u: Uint8Array) => updates.push(u))
  const text = writer.getText('t')
  text.insert(0, 'h')
  text.insert(1, 'i€')
  text.insert(0, yws.timeChar(1_000_000))
  // The update message y-protocols writes, as the server relays it.
  const enc = encoding.createEncoder()
  encoding.writeVarUint(enc, 0)
  syncProtocol.writeUpdate(enc, updates[1]!)
  const m = yws.readMessage(encoding.toUint8Array(enc))
  t.same({ type: m.type, syncType: m.syncType }, { type: 0, syncType: 2 })
  t.same(yws.readStringItems(m.payload, true), [{ client: writer.clientID, clock: 1, length: 2, text: 'i€' }])
  const front = yws.readStringItems(updates[2], true)[0]!
  t.equal(yws.sinceTimeChar(front.text, 1_000_000 + 37), 37, 'the typed character tells its age')
  // The whole state, as a joiner's step 2: its length without building the text.
  const items = yws.readStringItems(Y.encodeStateAsUpdate(writer), false)
  t.equal(items.reduce((n: number, i: { length: number }) => n + i.length, 0), writer.getText('t').length)
  // A deleted character becomes a GC struct in the state: skipped, not miscounted.
  text.delete(0, 1)
  const gcState = new Y.Doc({ gc: true })
  Y.applyUpdate(gcState, Y.encodeStateAsUpdate(writer))
  const after = yws.readStringItems(Y.encodeStateAsUpdate(gcState), false)
  t.equal(after.reduce((n: number, i: { length: number }) => n + i.length, 0), 3)
})
