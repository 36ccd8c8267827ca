import t from 'tap'
import * as Y from 'yjs'
import { BlameAnswer, EVENT_TIME_HEADER, HTTP_INGEST_PATH, LAST_SEQ_HEADER, type BlameSpan } from '../../contracts/mod.ts'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()
const edge = await stack.edge()

const bearer = (tok: string) => ({ authorization: `Bearer ${tok}` })
const blameUrl = (docId: string, query = '') => `${core.url}/v1/docs/${encodeURIComponent(docId)}/blame${query}`

async function blame(docId: string, tok: string, query = ''): Promise<BlameAnswer> {
  const res = await fetch(blameUrl(docId, query), { headers: bearer(tok) })
  if (res.status !== 200) throw new Error(`blame ${query}: ${res.status} ${await res.text()}`)
  return BlameAnswer.parse(await res.json())
}

/** The op log's event time of each user's rows (what blame's ts must be). */
async function eventTimes(docId: string): Promise<Map<string, string[]>> {
  const r = await stack.db.query<{ user_id: string; ts: Date }>('SELECT user_id, COALESCE(event_ts, ingest_ts) AS ts FROM op_log WHERE tenant = $1 AND doc_id = $2 ORDER BY id', ['acme', docId])
  const times = new Map<string, string[]>()
  for (const row of r.rows) times.set(row.user_id, [...(times.get(row.user_id) ?? []), row.ts.toISOString()])
  return times
}

const shape = (spans: BlameSpan[]) => spans.map((s) => ({ text: s.text, user: s.user, index: s.index }))

t.test('core - blame names the user who typed each span of the text, and when', async (t) => {
  const doc = 'blame/two users'
  const alice = await token({ tenant: 'acme', sub: 'alice', docs: ['blame/*'] })
  const bob = await token({ tenant: 'acme', sub: 'bob', docs: ['blame/*'] })
  const a = yclient(edge.url, doc, alice)
  const b = yclient(edge.url, doc, bob)
  t.teardown(() => {
    a.destroy()
    b.destroy()
  })
  await Promise.all([a.synced(), b.synced()])
  a.text.insert(0, 'Hello world')
  await until('alice’s text committed', async () => (await materializedText(core.url, doc, alice)) === 'Hello world')
  await until('bob sees it', () => b.text.toString() === 'Hello world')
  b.text.insert(6, 'big ') // inside alice's run: her item is split around his
  await until('bob’s insert committed', async () => (await materializedText(core.url, doc, alice)) === 'Hello big world')
  await until('alice sees it', () => a.text.toString() === 'Hello big world')
  a.text.delete(0, 1) // a deletion removes characters from blame, it writes none
  a.text.insert(0, 'J')
  await until('alice’s edit committed', async () => (await materializedText(core.url, doc, alice)) === 'Jello big world')

  const answer = await blame(doc, bob)
  t.same(shape(answer.spans), [
    { text: 'J', user: 'alice', index: 0 },
    { text: 'ello ', user: 'alice', index: 1 },
    { text: 'big ', user: 'bob', index: 6 },
    { text: 'world', user: 'alice', index: 10 },
  ], 'each run with its writer and offset')
  t.equal(answer.spans.map((s) => s.text).join(''), 'Jello big world', 'the spans spell the text')
  const times = await eventTimes(doc)
  t.equal(answer.spans[1]!.ts, times.get('alice')![0], 'alice’s first run: the event time of her first update')
  t.equal(answer.spans[3]!.ts, answer.spans[1]!.ts, 'both halves of her split item keep that time')
  t.equal(answer.spans[2]!.ts, times.get('bob')![0], 'bob’s run: his update’s event time')
  t.equal(answer.spans[0]!.ts, times.get('alice')!.at(-1), 'the J: her last update')
  t.equal(answer.type, 't')
  const last = await stack.db.query<{ seq: string }>('SELECT max(stream_seq) AS seq FROM op_log WHERE tenant = $1 AND doc_id = $2', ['acme', doc])
  t.equal(answer.seq, Number(last.rows[0]!.seq), 'blamed as of the document’s last sequence')

  const first = await stack.db.query<{ seq: string }>('SELECT min(stream_seq) AS seq FROM op_log WHERE tenant = $1 AND doc_id = $2', ['acme', doc])
  const early = await blame(doc, bob, `?at=${first.rows[0]!.seq}`)
  t.same(shape(early.spans), [{ text: 'Hello world', user: 'alice', index: 0 }], '?at= blames the text as it was then')
})

t.test('core - blame attributes each range to the first update that carried it, splitting merged items, and reads other root texts by ?type=', async (t) => {
  const doc = 'blame/retry'
  const author = new Y.Doc()
  author.getText('notes').insert(0, 'abc')
  const post = async (sub: string, key: string, eventTime: string, update: Uint8Array) => {
    const res = await fetch(`${edge.url.replace(/^ws:/, 'http:')}${HTTP_INGEST_PATH}/${encodeURIComponent(doc)}/updates`, {
      method: 'POST',
      body: update as BodyInit,
      headers: { ...bearer(await token({ tenant: 'acme', sub })), 'idempotency-key': key, [EVENT_TIME_HEADER]: eventTime },
    })
    t.equal(res.status, 202, `${sub}'s post stored`)
  }
  await post('carol', 'first', '2026-01-02T03:04:05.000Z', Y.encodeStateAsUpdate(author))
  // Carol's phone resends her ranges along with a new one, made a day later: Yjs kept the first
  // content; so does blame. The new character continues her clocks, so the document holds "abcd"
  // as ONE item: blame splits it.
  author.getText('notes').insert(3, 'd')
  await post('carol', 'again', '2026-01-03T03:04:05.000Z', Y.encodeStateAsUpdate(author))
  await until('both rows logged', async () => (await eventTimes(doc)).get('carol')?.length === 2)
  const tok = await token({ tenant: 'acme' })
  t.same((await blame(doc, tok, '?type=notes')).spans, [
    { text: 'abc', index: 0, user: 'carol', ts: '2026-01-02T03:04:05.000Z' },
    { text: 'd', index: 3, user: 'carol', ts: '2026-01-03T03:04:05.000Z' },
  ], 'the first writer of each range, with its X-Event-Time')
  t.same((await blame(doc, tok, '?type=absent')).spans, [], 'a root with no text: no spans')
})

t.test('core - blame is tenant-scoped, says how stale it is, and refuses bad parameters with 400', async (t) => {
  const doc = 'blame/scoped'
  const tok = await token({ tenant: 'acme', sub: 'erin' })
  const c = yclient(edge.url, doc, tok)
  t.teardown(() => c.destroy())
  await c.synced()
  c.text.insert(0, 'mine')
  await until('committed', async () => (await materializedText(core.url, doc, tok)) === 'mine')
  const res = await fetch(blameUrl(doc), { headers: bearer(tok) })
  t.equal(res.status, 200)
  const last = await stack.db.query<{ seq: string }>('SELECT max(stream_seq) AS seq FROM op_log WHERE tenant = $1 AND doc_id = $2', ['acme', doc])
  t.equal(res.headers.get(LAST_SEQ_HEADER), last.rows[0]!.seq, 'staleness header: the last applied sequence')
  await res.arrayBuffer()
  t.equal((await fetch(blameUrl(doc), { headers: bearer(await token({ tenant: 'globex' })) })).status, 404, 'another tenant: 404')
  t.equal((await fetch(blameUrl('blame/none'), { headers: bearer(tok) })).status, 404, 'no such document: 404')
  t.equal((await fetch(blameUrl(doc))).status, 401, 'no token: 401')
  t.equal((await fetch(blameUrl(doc, '?at=2000-01-01T00:00:00Z'), { headers: bearer(tok) })).status, 404, 'before the document existed: 404')
  for (const query of ['?type=', `?type=${'x'.repeat(257)}`, '?at=yesterday', '?at=', '?typo=t', '?at=2026-02-30T00:00:00Z', '?at=2026-01-01T00:00:00', '?at=1&at=2']) {
    const bad = await fetch(blameUrl(doc, query), { headers: bearer(tok) })
    t.equal(bad.status, 400, `${query.slice(0, 20)} is refused`)
    t.match(await bad.json(), { error: /type|at|parameter/ })
  }
})
