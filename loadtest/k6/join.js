// @ts-nocheck -- k6 JavaScript (goja): k6 modules and globals (__ENV, __VU, open), not type-checked here
// k6: the join scenario of `npm run bench` against a production DocFlow edge.
// setup() writes a DOC_MB MB document (chunks of CHUNK_CHARS characters, one update each: under
// the edge's frame limit and nats max_payload), waits SETTLE_S, and checks that a fresh client
// syncs the whole text; then JOINERS clients join at once. Time to synced = connect → the sync
// step 2 (the whole document); its text length is checked after the clock stopped.
// To join an existing document instead: -e DOC_ID=<id> -e EXPECT_CHARS=<its text length> (no build).
//   k6 run -e WS_URL=wss://edge.example.com -e TOKENS_FILE=tokens.txt -e JOINERS=150 -e DOC_MB=20 loadtest/k6/join.js
import ws from 'k6/ws'
import { check, fail, sleep } from 'k6'
import { Rate, Trend } from 'k6/metrics'
import { intEnv, roomUrl, tokensFromEnv } from './lib/env.js'
import * as Y from './lib/yws.js'

const JOINERS = intEnv(__ENV, 'JOINERS', 150)
const DOC_MB = intEnv(__ENV, 'DOC_MB', 20)
const CHUNK_CHARS = intEnv(__ENV, 'CHUNK_CHARS', 512 * 1024)
const SETTLE_S = intEnv(__ENV, 'SETTLE_S', 10)
const TOKENS = tokensFromEnv(__ENV, open)

const timeToSynced = new Trend('time_to_synced_ms', true)
const fullText = new Rate('joined_full_text')

export const options = {
  setupTimeout: '10m',
  scenarios: {
    // Every VU starts at once: one join each.
    joiners: { executor: 'per-vu-iterations', vus: JOINERS, iterations: 1, maxDuration: '5m' },
  },
  thresholds: {
    time_to_synced_ms: ['med<2000'],
    joined_full_text: ['rate==1'],
  },
}

/** Connects, syncs, and returns { ms, chars } of the sync step 2 received; `then(socket)` may write. */
function syncOnce(url, then) {
  const out = { ms: NaN, chars: -1 }
  const t0 = Date.now()
  let step2
  ws.connect(url, {}, (socket) => {
    socket.on('open', () => socket.sendBinary(Y.syncStep1Empty().buffer))
    socket.on('binaryMessage', (frame) => {
      const m = Y.readMessage(new Uint8Array(frame))
      if (m.type !== Y.MESSAGE_SYNC) return
      if (m.syncType === Y.SYNC_STEP1) return void socket.sendBinary(Y.syncStep2(Y.EMPTY_UPDATE).buffer)
      if (m.syncType !== Y.SYNC_STEP2 || step2) return
      out.ms = Date.now() - t0
      step2 = m.payload
      if (then) then(socket)
      else socket.close()
    })
    socket.setTimeout(() => socket.close(), 240 * 1000)
  })
  if (step2) out.chars = Y.readStringItems(step2, false).reduce((n, i) => n + i.length, 0)
  return out
}

export function setup() {
  const token = TOKENS[0]
  if (__ENV.DOC_ID) return { docId: __ENV.DOC_ID, chars: intEnv(__ENV, 'EXPECT_CHARS', -1) }
  const docId = `k6-join-${DOC_MB}mb-${Date.now()}`
  const target = DOC_MB * 1000 * 1000
  const pattern = 'the quick brown fox jumps over the lazy dog 0123456789\n'
  const chunk = pattern.repeat(Math.ceil(CHUNK_CHARS / pattern.length)).slice(0, CHUNK_CHARS)
  const me = Y.randomClientId()
  let chars = 0
  syncOnce(roomUrl(__ENV.WS_URL, docId, token), (socket) => {
    const next = () => {
      if (chars >= target) return void socket.setTimeout(() => socket.close(), SETTLE_S * 1000)
      const text = chunk.slice(0, Math.min(CHUNK_CHARS, target - chars))
      socket.sendBinary(Y.updateMessage(Y.insertUpdate(me, chars, text)).buffer)
      chars += text.length
      socket.setTimeout(next, 20)
    }
    next()
  })
  sleep(SETTLE_S)
  const check1 = syncOnce(roomUrl(__ENV.WS_URL, docId, token))
  if (check1.chars !== chars) fail(`the built doc ${docId} syncs with ${check1.chars} of ${chars} characters`)
  console.log(`built ${docId}: ${chars} characters, a fresh client synced it in ${check1.ms} ms`)
  sleep(SETTLE_S) // the room closes; the joiners load it as in life
  return { docId, chars }
}

export default function (data) {
  const r = syncOnce(roomUrl(__ENV.WS_URL, data.docId, TOKENS[(__VU - 1) % TOKENS.length]))
  const full = data.chars < 0 ? r.chars > 0 : r.chars === data.chars
  fullText.add(full)
  if (Number.isFinite(r.ms)) timeToSynced.add(r.ms)
  check(r, { 'synced with the whole text': () => full })
}
