import t from 'tap'
import * as Y from 'yjs'
import { EVENT_TIME_HEADER, HTTP_INGEST_PATH, Role } from '../../contracts/mod.ts'
import { setup, token } from '../helpers/setup.ts'
import { docContents, materializedText, readState, until, yclient } from '../helpers/client.ts'
import { counterValue } from '../helpers/metric-value.ts'
import { edit, itemsUpdate, mapEntryWithRightNeighbour, misplacedEdit, resplicedEdit, textItem } from '../helpers/edits.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()
const edge = await stack.edge()
const other = await stack.edge()
const httpUrl = (wsUrl: string) => wsUrl.replace(/^ws:/, 'http:')

async function post(edgeWsUrl: string, docId: string, body: Uint8Array | string, headers: Record<string, string>) {
  const res = await fetch(`${httpUrl(edgeWsUrl)}${HTTP_INGEST_PATH}/${encodeURIComponent(docId)}/updates`, { method: 'POST', body: body as BodyInit, headers })
  return { status: res.status, body: (await res.json()) as { status?: string; duplicate?: boolean; seq?: number; error?: string } }
}
const opRows = async (docId: string) => (await stack.db.query('SELECT count(*)::int AS n FROM op_log WHERE tenant = $1 AND doc_id = $2', ['acme', docId])).rows[0].n as number

t.test('edge - a POSTed update is stored once per Idempotency-Key, on any edge, and live clients on every edge see it', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const here = yclient(edge.url, 'mobile-sync', tok)
  const there = yclient(other.url, 'mobile-sync', tok)
  t.teardown(() => {
    here.destroy()
    there.destroy()
  })
  await Promise.all([here.synced(), there.synced()])
  const headers = { authorization: `Bearer ${tok}`, 'idempotency-key': 'phone-1:outbox-17' }
  const first = await post(edge.url, 'mobile-sync', edit('from the phone', 4242), headers)
  t.equal(first.status, 202)
  t.match(first.body, { status: 'accepted', duplicate: false, seq: Number })
  await until('a client on the same edge sees it', () => here.text.toString() === 'from the phone')
  await until('a client on another edge sees it', () => there.text.toString() === 'from the phone')

  const again = await post(edge.url, 'mobile-sync', edit('from the phone', 4242), headers)
  t.same({ status: again.status, duplicate: again.body.duplicate, seq: again.body.seq }, { status: 202, duplicate: true, seq: first.body.seq }, 'the same key again: stored once')
  const elsewhere = await post(other.url, 'mobile-sync', edit('from the phone', 4242), headers)
  t.same({ status: elsewhere.status, duplicate: elsewhere.body.duplicate }, { status: 202, duplicate: true }, 'through another edge: stored once')
  await until('core materialized it', async () => (await materializedText(core.url, 'mobile-sync', tok).catch(() => null)) === 'from the phone')
  t.equal(await opRows('mobile-sync'), 1, 'one op-log row')
  t.equal(await counterValue(edge.edge.metrics.httpIngests, { tenant: 'acme', status: 202 }), 2)
})

t.test('edge - a retry whose first try JetStream stored (its PubAck lost) still reaches the live clients, on every edge', async (t) => {
  const impatient = await stack.edge({ publishAckTimeoutMs: 400 })
  t.teardown(() => impatient.stop())
  const tok = await token({ tenant: 'acme' })
  const live = yclient(impatient.url, 'retry-doc', tok)
  const far = yclient(edge.url, 'retry-doc', tok)
  t.teardown(() => (live.destroy(), far.destroy()))
  await Promise.all([live.synced(), far.synced()])
  const headers = { authorization: `Bearer ${tok}`, 'idempotency-key': 'phone:outbox-1' }
  const body = edit('from the phone', 4343)
  // nats-server stalls (GC, fsync, a leader change): the PubAck misses the edge's timeout, the message is stored.
  const resume = await stack.pauseNats()
  const first = post(impatient.url, 'retry-doc', body, headers)
  await new Promise((resolve) => setTimeout(resolve, 900))
  resume()
  t.equal((await first).status, 503, 'the first try is answered 503')
  const retry = await post(impatient.url, 'retry-doc', body, headers)
  t.match(retry, { status: 202, body: { duplicate: true } }, 'the retry is a duplicate')
  await until('the live client has it', () => live.text.toString() === 'from the phone')
  await until('a live client on another edge has it', () => far.text.toString() === 'from the phone')
})

t.test('edge - a POSTed update with no room open anywhere is materialized, and a later client loads it', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const r = await post(other.url, 'offline-only', edit('queued offline', 77), { authorization: `Bearer ${tok}`, 'idempotency-key': 'k-1' })
  t.equal(r.status, 202)
  await until('core materialized it', async () => (await materializedText(core.url, 'offline-only', tok).catch(() => null)) === 'queued offline')
  const c = yclient(edge.url, 'offline-only', tok)
  t.teardown(() => c.destroy())
  await c.synced()
  await until('the client loads it', () => c.text.toString() === 'queued offline')
})

t.test('edge, core - a POSTed item that would hang in another list is dead-lettered by core, which keeps the document as it was', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const docId = 'http-respliced'
  const { base, respliced } = resplicedEdit()
  const headers = (key: string) => ({ authorization: `Bearer ${tok}`, 'idempotency-key': key })
  t.equal((await post(edge.url, docId, base, headers('base'))).status, 202)
  await until('the base is in the op log', async () => (await opRows(docId)) === 1)
  // No room holds the document, so nothing tried it before JetStream stored it.
  t.equal((await post(edge.url, docId, respliced, headers('respliced'))).status, 202)
  const reasons = async () => (await stack.db.query('SELECT reason FROM dead_letters WHERE doc_id = $1', [docId])).rows.map((r) => r.reason as string)
  await until('core dead-lettered it', async () => (await reasons()).length > 0)
  t.match(await reasons(), [/^malformed-item: item 11:1 names a left neighbour in another list/])
  const doc = await readState(core.url, docId, tok)
  t.same(doc instanceof Y.Doc && docContents(doc), { t: '', m: { k: 'v' }, a: [] }, 'the document as it was')
  t.equal(await opRows(docId), 1, 'not in the op log')
})

t.test('core - a POSTed item whose neighbours lie in different lists is refused before it touches the document: no rebuild', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const headers = (key: string) => ({ authorization: `Bearer ${tok}`, 'idempotency-key': key })
  const reasons = async (docId: string) => (await stack.db.query('SELECT reason FROM dead_letters WHERE doc_id = $1', [docId])).rows.map((r) => r.reason as string)
  // A right neighbour in another list (misplacedEdit), and a map entry named as a right neighbour
  // (14 bytes that cost a rebuild of the whole document each when judged after applying).
  const map = new Y.Doc()
  map.clientID = 21
  map.getMap('m').set('k', 1)
  const cases = [
    { docId: 'http-misplaced', ...(({ base, misplaced }) => ({ base, bad: misplaced }))(misplacedEdit()), reason: /^malformed-item: item 10:0 names a map entry as its right neighbour/ },
    { docId: 'http-map-right', base: Y.encodeStateAsUpdate(map), bad: mapEntryWithRightNeighbour(22, { client: 21, clock: 0 }), reason: /^malformed-item: item 22:0 names a map entry as its right neighbour/ },
  ]
  for (const c of cases) {
    t.equal((await post(edge.url, c.docId, c.base, headers(`${c.docId}-base`))).status, 202)
    await until('the base is in the op log', async () => (await opRows(c.docId)) === 1)
  }
  const rebuilds = await counterValue(core.core.metrics.docRebuilds, { tenant: 'acme' })
  for (const c of cases) t.equal((await post(edge.url, c.docId, c.bad, headers(`${c.docId}-bad`))).status, 202, 'no room holds it: accepted')
  for (const c of cases) {
    await until(`core dead-lettered ${c.docId}`, async () => (await reasons(c.docId)).length > 0)
    t.match(await reasons(c.docId), [c.reason])
    t.equal(await opRows(c.docId), 1, 'not in the op log')
  }
  t.equal(await counterValue(core.core.metrics.docRebuilds, { tenant: 'acme' }), rebuilds, 'no document rebuilt')
})

t.test('edge - a bad POST gets a clear 4xx with its reason and stores nothing', async (t) => {
  const editor = await token({ tenant: 'acme' })
  const viewer = await token({ tenant: 'acme', role: Role.Viewer })
  const narrow = await token({ tenant: 'acme', docs: ['team-a/*'] })
  const update = edit('never stored', 99)
  const key = { 'idempotency-key': 'bad-1' }
  const cases: [string, Promise<{ status: number; body: { error?: string } }>, number, RegExp][] = [
    ['no token', post(edge.url, 'refused', update, key), 401, /Bearer/],
    ['a forged token', post(edge.url, 'refused', update, { ...key, authorization: `Bearer ${await token({ tenant: 'acme' }, 3_600, 'another-secret-of-at-least-32-bytes!')}` }), 401, /invalid token/],
    ['an expired token', post(edge.url, 'refused', update, { ...key, authorization: `Bearer ${await token({ tenant: 'acme' }, -60)}` }), 401, /exp/],
    // PostgreSQL holds no NUL in text: one such user id in the op log failed its partition's every commit.
    ['a token whose sub holds a control character', post(edge.url, 'refused', update, { ...key, authorization: `Bearer ${await token({ tenant: 'acme', sub: 'mallory\u0000' })}` }), 401, /control characters/],
    ['a viewer', post(edge.url, 'refused', update, { ...key, authorization: `Bearer ${viewer}` }), 403, /viewers cannot write/],
    ['a document outside the token', post(edge.url, 'team-b/refused', update, { ...key, authorization: `Bearer ${narrow}` }), 403, /does not cover/],
    ['no Idempotency-Key', post(edge.url, 'refused', update, { authorization: `Bearer ${editor}` }), 400, /Idempotency-Key/],
    ['a body that is not a Yjs update', post(edge.url, 'refused', Uint8Array.from([0xff, 0xff, 0xff, 0xff]), { ...key, authorization: `Bearer ${editor}` }), 400, /not a Yjs update/],
    ['an empty body', post(edge.url, 'refused', new Uint8Array(0), { ...key, authorization: `Bearer ${editor}` }), 400, /empty body/],
  ]
  for (const [what, response, status, reason] of cases) {
    const r = await response
    t.equal(r.status, status, `${what}: ${status}`)
    t.match(r.body.error, reason, `${what}: says why (${r.body.error})`)
  }
  const wrongPath = await fetch(`${httpUrl(edge.url)}${HTTP_INGEST_PATH}/refused`, { method: 'POST', body: update as BodyInit, headers: { ...key, authorization: `Bearer ${editor}` } })
  t.equal(wrongPath.status, 404, 'a path without /updates: 404')
  const small = await stack.edge({ maxMessageBytes: 1_024 })
  const big = new Y.Doc()
  big.getText('t').insert(0, 'x'.repeat(4_000))
  const tooBig = await post(small.url, 'refused', Y.encodeStateAsUpdate(big), { ...key, authorization: `Bearer ${editor}` })
  t.equal(tooBig.status, 413, 'above the frame limit: 413')
  t.match(tooBig.body.error, /above 1024 bytes/)
  t.equal(await opRows('refused'), 0, 'nothing stored')
  t.equal(await opRows('team-b/refused'), 0)
})

t.test('edge - X-Event-Time: ISO 8601 or ms since epoch is kept, a bad one is a 400, a future one is clamped to the ingest time', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const headers = (key: string, eventTime: string) => ({ authorization: `Bearer ${tok}`, 'idempotency-key': key, [EVENT_TIME_HEADER]: eventTime })
  for (const bad of ['yesterday', '2024-05-01T09:30:00', '-5', '0']) {
    const r = await post(edge.url, 'event-time-bad', edit('never stored', 1), headers(`bad-${bad}`, bad))
    t.equal(r.status, 400, `${JSON.stringify(bad)}: 400`)
    t.match(r.body.error, /x-event-time must be ISO 8601 with a zone .* or ms since epoch/, `${JSON.stringify(bad)}: says what is accepted`)
  }
  const times = async (docId: string) =>
    (await stack.db.query<{ event_ms: number; ingest_ms: number }>("SELECT round(extract(epoch FROM event_ts) * 1000)::float8 AS event_ms, round(extract(epoch FROM ingest_ts) * 1000)::float8 AS ingest_ms FROM op_log WHERE tenant = 'acme' AND doc_id = $1", [docId])).rows
  const madeAt = Date.now() - 600_000
  const asMs = await post(edge.url, 'event-time-ms', edit('ten minutes ago', 2), headers('ms-1', String(madeAt)))
  t.same({ status: asMs.status, clamped: (asMs.body as { eventTimeClamped?: boolean }).eventTimeClamped }, { status: 202, clamped: undefined })
  const ahead = await post(edge.url, 'event-time-future', edit('from a phone an hour fast', 3), headers('future-1', new Date(Date.now() + 3_600_000).toISOString()))
  t.same({ status: ahead.status, clamped: (ahead.body as { eventTimeClamped?: boolean }).eventTimeClamped }, { status: 202, clamped: true }, 'stored, and the answer says the time was clamped')
  await until('both committed', async () => (await times('event-time-ms')).length === 1 && (await times('event-time-future')).length === 1)
  t.equal((await times('event-time-ms'))[0]!.event_ms, madeAt, 'ms since epoch kept')
  const [future] = await times('event-time-future')
  t.equal(future!.event_ms, future!.ingest_ms, 'a future event time is clamped to the ingest time')
  t.equal(await opRows('event-time-bad'), 0, 'nothing stored for a bad one')
})

t.test('edge - a POSTed update that needs edits the document lacks: 409 where a room holds the document; elsewhere core holds it until they come', async (t) => {
  const alice = await token({ tenant: 'acme', sub: 'alice' })
  const mallory = { authorization: `Bearer ${await token({ tenant: 'acme', sub: 'mallory' })}` }
  const writer = yclient(other.url, 'waits-on-alice', alice)
  t.teardown(() => writer.destroy())
  await writer.synced()
  writer.text.insert(0, 'abc')
  await until('abc materialized', async () => (await materializedText(core.url, 'waits-on-alice', alice)) === 'abc')
  // Hangs after alice's next character, which she has not typed yet.
  const next = Y.getState(writer.doc.store, writer.doc.clientID)
  const waiting = itemsUpdate([textItem(66, 0, 'X', { origin: Y.createID(writer.doc.clientID, next) })])
  const refused = await post(other.url, 'waits-on-alice', waiting, { ...mallory, 'idempotency-key': 'pending-1' })
  t.equal(refused.status, 409, 'the edge whose room holds the document refuses it')
  t.match(refused.body.error, /lacks edits this update depends on/)
  t.equal((await post(edge.url, 'waits-on-alice', waiting, { ...mallory, 'idempotency-key': 'pending-2' })).status, 202, 'an edge with no room of it stores it')
  writer.text.insert(3, 'def')
  await until('alice\'s typing materialized, with the item it let in after her "d"', async () => (await materializedText(core.url, 'waits-on-alice', alice)) === 'abcdXef')
  await until('and the writer shows the same', () => writer.text.toString() === 'abcdXef')

  // Its item names, as its parent, a clock of its own client it has not made: Yjs throws on it
  // when it integrates, which for an update waiting pending is under someone else's.
  const orphan = itemsUpdate([textItem(67, 0, 'Y', { parent: Y.createID(67, 100) })])
  const malformed = await post(edge.url, 'waits-on-alice', orphan, { ...mallory, 'idempotency-key': 'orphan' })
  t.equal(malformed.status, 400)
  t.match(malformed.body.error, /not made before it, as its parent/)
})

t.test('edge - two POSTs of one client stored out of order (a retry of the first after the second) both materialize', async (t) => {
  const tok = await token({ tenant: 'acme', sub: 'phone' })
  const phone = new Y.Doc()
  phone.getText('t').insert(0, 'hello ')
  const first = Y.encodeStateAsUpdate(phone)
  const before = Y.encodeStateVector(phone)
  phone.getText('t').insert(6, 'world')
  const second = Y.encodeStateAsUpdate(phone, before)
  const headers = (key: string) => ({ authorization: `Bearer ${tok}`, 'idempotency-key': key })
  t.equal((await post(edge.url, 'outbox', second, headers('outbox-2'))).status, 202)
  t.equal((await post(edge.url, 'outbox', first, headers('outbox-1'))).status, 202)
  await until('both materialized: core held the second until the first came', async () => (await materializedText(core.url, 'outbox', tok)) === 'hello world')
})
