// @ts-nocheck -- k6 JavaScript (goja): k6 modules and globals (__ENV, __VU, open), not type-checked here
// k6: the observers scenario of `npm run bench` against a production DocFlow edge.
// OBSERVERS clients open ONE document; CONNECT_S later one more client types WRITER_EDITS single
// characters at WRITER_OPS_PER_S. Fanout = each observer's receive time − the writer's insert time
// (encoded in the typed character itself, lib/yws.js timeChar; one k6 instance = one clock — run
// writer and observers on the same load generator). Every observer must end with all the edits.
//   k6 run -e WS_URL=wss://edge.example.com -e TOKENS_FILE=tokens.txt -e OBSERVERS=1500 loadtest/k6/observers.js
import ws from 'k6/ws'
import { check } from 'k6'
import { Counter, Rate, Trend } from 'k6/metrics'
import { intEnv, roomUrl, tokensFromEnv } from './lib/env.js'
import * as Y from './lib/yws.js'

const OBSERVERS = intEnv(__ENV, 'OBSERVERS', 1500)
const WRITER_OPS_PER_S = intEnv(__ENV, 'WRITER_OPS_PER_S', 5)
const DURATION_S = intEnv(__ENV, 'DURATION_S', 30)
/** Time the observers get to connect before the writer starts. */
const CONNECT_S = intEnv(__ENV, 'CONNECT_S', 30)
const WRITER_EDITS = WRITER_OPS_PER_S * DURATION_S
const TOKENS = tokensFromEnv(__ENV, open)

const fanout = new Trend('fanout_ms', true)
const timeToSynced = new Trend('time_to_synced_ms', true)
const typed = new Counter('edits_typed')
const converged = new Rate('observer_converged')

export const options = {
  scenarios: {
    observers: { executor: 'per-vu-iterations', exec: 'observer', vus: OBSERVERS, iterations: 1, maxDuration: `${CONNECT_S + DURATION_S + 120}s` },
    writer: { executor: 'per-vu-iterations', exec: 'writer', vus: 1, iterations: 1, startTime: `${CONNECT_S}s`, maxDuration: `${DURATION_S + 60}s` },
  },
  thresholds: {
    fanout_ms: ['p(99)<44', 'p(95)<50'],
    observer_converged: ['rate==1'],
  },
}

/** A fresh document per run (the writer must be its only writer), or DOC_ID. */
export function setup() {
  return { docId: __ENV.DOC_ID || `k6-observers-${Date.now()}` }
}

const url = (docId) => roomUrl(__ENV.WS_URL, docId, TOKENS[(__VU - 1) % TOKENS.length])

export function observer(data) {
  /** The writer's edits held: its clocks below this (step 2 and updates may overlap). */
  let chars = 0
  const t0 = Date.now()
  const res = ws.connect(url(data.docId), {}, (socket) => {
    socket.on('open', () => socket.sendBinary(Y.syncStep1Empty().buffer))
    socket.on('binaryMessage', (frame) => {
      const now = Date.now()
      const m = Y.readMessage(new Uint8Array(frame))
      if (m.type !== Y.MESSAGE_SYNC) return
      if (m.syncType === Y.SYNC_STEP1) return void socket.sendBinary(Y.syncStep2(Y.EMPTY_UPDATE).buffer)
      if (m.syncType === Y.SYNC_STEP2) timeToSynced.add(now - t0)
      for (const item of Y.readStringItems(m.payload, true)) {
        chars = Math.max(chars, item.clock + item.length)
        if (m.syncType === Y.SYNC_UPDATE) for (const ch of item.text) fanout.add(Y.sinceTimeChar(ch, now))
      }
      if (chars >= WRITER_EDITS) socket.setTimeout(() => socket.close(), 1000)
    })
    // Give up well after the writer finished.
    socket.setTimeout(() => socket.close(), (CONNECT_S + DURATION_S + 60) * 1000)
  })
  converged.add(chars === WRITER_EDITS)
  check(res, { 'upgraded (101)': (r) => r && r.status === 101 })
}

export function writer(data) {
  const me = Y.randomClientId()
  let clock = 0
  const res = ws.connect(url(data.docId), {}, (socket) => {
    socket.on('open', () => socket.sendBinary(Y.syncStep1Empty().buffer))
    socket.on('binaryMessage', (frame) => {
      const m = Y.readMessage(new Uint8Array(frame))
      if (m.type !== Y.MESSAGE_SYNC) return
      if (m.syncType === Y.SYNC_STEP1) return void socket.sendBinary(Y.syncStep2(Y.EMPTY_UPDATE).buffer)
      if (m.syncType !== Y.SYNC_STEP2 || clock > 0) return
      socket.setInterval(() => {
        if (clock >= WRITER_EDITS) return void socket.setTimeout(() => socket.close(), 2000)
        socket.sendBinary(Y.updateMessage(Y.insertUpdate(me, clock, Y.timeChar(Date.now()))).buffer)
        clock++
        typed.add(1)
      }, 1000 / WRITER_OPS_PER_S)
    })
  })
  check(res, { 'writer upgraded (101)': (r) => r && r.status === 101, 'writer typed every edit': () => clock === WRITER_EDITS })
}
