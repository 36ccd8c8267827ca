// @ts-nocheck -- k6 JavaScript (goja): k6 modules and globals (__ENV, __VU, open), not type-checked here
// k6: the typing storm of `npm run bench` against a production DocFlow edge.
// RATE/10 documents, 2 clients each, every client types single characters at OPS_PER_CLIENT/s on a
// steady schedule inside its socket (open loop: the offered rate RATE holds whatever the server
// does), for DURATION_S. Fanout = the peer's receive time − the writer's insert time: the typed
// character itself encodes the insert time (lib/yws.js timeChar), so each edit stays one character.
//   k6 run -e WS_URL=wss://edge.example.com -e TOKENS_FILE=tokens.txt -e RATE=5000 loadtest/k6/typing-storm.js
import ws from 'k6/ws'
import { check } from 'k6'
import { Counter, Rate, Trend } from 'k6/metrics'
import { intEnv, roomUrl, tokensFromEnv } from './lib/env.js'
import * as Y from './lib/yws.js'

const RATE = intEnv(__ENV, 'RATE', 2000)
const OPS_PER_CLIENT = intEnv(__ENV, 'OPS_PER_CLIENT', 5)
const DURATION_S = intEnv(__ENV, 'DURATION_S', 30)
const DOC_PREFIX = __ENV.DOC_PREFIX || 'k6-storm'
const CLIENTS = 2 * Math.max(1, Math.round(RATE / (2 * OPS_PER_CLIENT)))
const TOKENS = tokensFromEnv(__ENV, open)

const fanout = new Trend('fanout_ms', true)
const timeToSynced = new Trend('time_to_synced_ms', true)
const typed = new Counter('edits_typed')
const received = new Counter('edits_received')
const synced = new Rate('client_synced')

export const options = {
  scenarios: {
    // One VU = one client with one socket for the whole run; the offered rate is CLIENTS × OPS_PER_CLIENT.
    typists: { executor: 'per-vu-iterations', vus: CLIENTS, iterations: 1, maxDuration: `${DURATION_S + 120}s` },
  },
  thresholds: {
    fanout_ms: ['p(95)<50'],
    client_synced: ['rate==1'],
    time_to_synced_ms: ['p(95)<2000'],
  },
}

export default function () {
  const doc = `${DOC_PREFIX}-${Math.floor((__VU - 1) / 2)}`
  const me = Y.randomClientId()
  let clock = 0
  let isSynced = false
  const t0 = Date.now()
  const res = ws.connect(roomUrl(__ENV.WS_URL, doc, TOKENS[(__VU - 1) % TOKENS.length]), {}, (socket) => {
    socket.on('open', () => socket.sendBinary(Y.syncStep1Empty().buffer))
    socket.on('binaryMessage', (frame) => {
      const now = Date.now()
      const m = Y.readMessage(new Uint8Array(frame))
      if (m.type !== Y.MESSAGE_SYNC) return // awareness
      if (m.syncType === Y.SYNC_STEP1) return void socket.sendBinary(Y.syncStep2(Y.EMPTY_UPDATE).buffer)
      if (m.syncType === Y.SYNC_STEP2 && !isSynced) {
        isSynced = true
        timeToSynced.add(now - t0)
        // Jittered start, then a steady schedule.
        socket.setTimeout(() => {
          socket.setInterval(() => {
            socket.sendBinary(Y.updateMessage(Y.insertUpdate(me, clock, Y.timeChar(Date.now()))).buffer)
            clock++
            typed.add(1)
          }, 1000 / OPS_PER_CLIENT)
        }, Math.random() * (1000 / OPS_PER_CLIENT))
        socket.setTimeout(() => socket.close(), DURATION_S * 1000)
      }
      for (const item of Y.readStringItems(m.payload, true)) {
        if (item.client === me) continue
        received.add(item.length)
        if (m.syncType === Y.SYNC_UPDATE) for (const ch of item.text) fanout.add(Y.sinceTimeChar(ch, now))
      }
    })
    socket.on('error', (e) => console.error(`VU ${__VU} ${doc}: ${e.error()}`))
  })
  synced.add(isSynced)
  check(res, { 'upgraded (101)': (r) => r && r.status === 101 })
}
