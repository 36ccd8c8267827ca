import t from 'tap'
import { randomBytes } from 'node:crypto'
import * as Y from 'yjs'
import { EVENT_TIME_HEADER, HISTORY_MAX_PAGE_BYTES, HTTP_INGEST_PATH, HistoryPage, LAST_SEQ_HEADER, LAST_SEQ_TIME_HEADER } from '../../contracts/mod.ts'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()
const edge = await stack.edge()

const bearer = (tok: string) => ({ authorization: `Bearer ${tok}` })
const docUrl = (docId: string, view: string, query = '') => `${core.url}/v1/docs/${encodeURIComponent(docId)}/${view}${query}`

async function historyPage(docId: string, tok: string, query = ''): Promise<HistoryPage> {
  const res = await fetch(docUrl(docId, 'history', query), { headers: bearer(tok) })
  if (res.status !== 200) throw new Error(`history ${query}: ${res.status} ${await res.text()}`)
  return HistoryPage.parse(await res.json())
}

/** The op log's rows of a document, newest first (what history must show). */
async function opLog(docId: string, tenant = 'acme') {
  const r = await stack.db.query<{ seq: string; user_id: string }>('SELECT stream_seq AS seq, user_id FROM op_log WHERE tenant = $1 AND doc_id = $2 ORDER BY id DESC', [tenant, docId])
  return r.rows.map((row) => ({ seq: Number(row.seq), user: row.user_id }))
}

/** Posts `n` one-character updates by `user` through HTTP ingest (made at `eventTime` if given): n op-log rows, one each. */
async function postEdits(docId: string, user: string, doc: Y.Doc, n: number, tenant = 'acme', eventTime?: string): Promise<void> {
  const tok = await token({ tenant, sub: user })
  for (let i = 0; i < n; i++) {
    const before = Y.encodeStateVector(doc)
    doc.getText('t').insert(0, String(i % 10))
    const res = await fetch(`${edge.url.replace(/^ws:/, 'http:')}${HTTP_INGEST_PATH}/${encodeURIComponent(docId)}/updates`, {
      method: 'POST',
      body: Y.encodeStateAsUpdate(doc, before) as BodyInit,
      headers: { ...bearer(tok), 'idempotency-key': `${user}-${doc.clientID}-${i}`, ...(eventTime ? { [EVENT_TIME_HEADER]: eventTime } : {}) },
    })
    if (res.status !== 202) throw new Error(`ingest ${i}: ${res.status} ${await res.text()}`)
  }
}

t.test('core - history lists two users’ edits newest first with their users and Yjs clients', async (t) => {
  const alice = await token({ tenant: 'acme', sub: 'alice', docs: ['hist/*'] })
  const bob = await token({ tenant: 'acme', sub: 'bob', docs: ['hist/*'] })
  const a = yclient(edge.url, 'hist/two users', alice)
  const b = yclient(edge.url, 'hist/two users', bob)
  t.teardown(() => {
    a.destroy()
    b.destroy()
  })
  await Promise.all([a.synced(), b.synced()])
  // Each turn is committed before the next starts, so history has three runs of users.
  a.text.insert(0, 'aa')
  await until('alice’s first turn committed', async () => (await materializedText(core.url, 'hist/two users', alice)) === 'aa')
  b.text.insert(2, 'bb')
  await until('bob’s turn committed', async () => (await materializedText(core.url, 'hist/two users', alice)) === 'aabb')
  a.text.insert(4, 'cc')
  await until('alice’s second turn committed', async () => (await materializedText(core.url, 'hist/two users', alice)) === 'aabbcc')

  const page = await historyPage('hist/two users', bob)
  const runs = page.entries.map((e) => e.user).filter((u, i, all) => i === 0 || all[i - 1] !== u)
  t.same(runs, ['alice', 'bob', 'alice'], 'newest first: alice, then bob, then alice’s first edits')
  t.same(page.entries.map((e) => ({ seq: e.seq, user: e.user })), await opLog('hist/two users'), 'every op-log row, newest first')
  t.equal(page.next, null, 'one page holds them all')
  for (const e of page.entries) {
    t.same(e.clients, [e.user === 'alice' ? a.doc.clientID : b.doc.clientID], `${e.user}'s entry names ${e.user}'s Yjs client`)
    t.ok(e.bytes > 0 && e.status === 'applied', 'size and status')
  }
  const seqs = page.entries.map((e) => e.seq)
  t.same(seqs, [...seqs].sort((x, y) => y - x), 'stream sequences descend')
  const times = page.entries.map((e) => Date.parse(e.ts))
  t.same(times, [...times].sort((x, y) => y - x), 'ingest times descend')
})

t.test('core - history pages cover every entry exactly once with event times, and bad limits or cursors get 400', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const doc = new Y.Doc()
  const offline = '2026-01-02T03:04:05.000Z'
  await postEdits('paged', 'carol', doc, 12, 'acme', offline)
  const daveDoc = new Y.Doc() // dave's own Yjs client: one user's client id is not another's to write with
  Y.applyUpdate(daveDoc, Y.encodeStateAsUpdate(doc))
  await postEdits('paged', 'dave', daveDoc, 11)
  await until('23 updates committed', async () => (await opLog('paged')).length === 23)

  const seen: HistoryPage['entries'] = []
  let cursor: string | null = null
  let pages = 0
  do {
    const page: HistoryPage = await historyPage('paged', tok, `?limit=5${cursor ? `&before=${encodeURIComponent(cursor)}` : ''}`)
    t.ok(page.entries.length <= 5, 'a page holds at most limit entries')
    seen.push(...page.entries)
    cursor = page.next
    pages++
  } while (cursor !== null && pages < 20)
  t.equal(pages, 5, '23 entries in pages of 5')
  t.same(seen.map((e) => ({ seq: e.seq, user: e.user })), await opLog('paged'), 'every op-log row once, newest first')
  t.same(seen.map((e) => e.user), [...Array(11).fill('dave'), ...Array(12).fill('carol')], 'dave’s later edits first')
  t.ok(seen.every((e) => e.eventTs === (e.user === 'carol' ? offline : e.ts)), 'event time: carol’s X-Event-Time, else the ingest time')
  t.equal((await historyPage('paged', tok)).entries.length, 23, 'default limit (50) holds them all')

  for (const query of ['?limit=0', '?limit=501', '?limit=abc', '?limit=', '?before=bm9wZQ', '?before=', '?limt=1', '?limit=5&limit=6']) {
    const res = await fetch(docUrl('paged', 'history', query), { headers: bearer(tok) })
    t.equal(res.status, 400, `${query} is refused`)
    t.match(await res.json(), { error: /limit|before/ })
  }
})

t.test('core - a history page of large updates fetches at most HISTORY_MAX_PAGE_BYTES of them: it ends early with next, and paging visits every entry once', async (t) => {
  const tok = await token({ tenant: 'acme' })
  // Ten updates of ~1 MB by one Yjs client, straight into the op log.
  const author = new Y.Doc()
  const updates: Uint8Array[] = []
  author.on('update', (u: Uint8Array) => updates.push(u))
  for (let i = 0; i < 10; i++) author.getText('t').insert(0, randomBytes(512 * 1024).toString('hex'))
  await stack.db.query(
    `INSERT INTO op_log (tenant, doc_id, stream_seq, msg_id, user_id, edge_id, update, status, ingest_ts)
     SELECT 'acme', 'hist/large', s, m, 'hank', 'seed', u, 'applied', now() FROM unnest($1::bigint[], $2::text[], $3::bytea[]) AS x(s, m, u)`,
    [updates.map((_, i) => 5_000_000 + i), updates.map((_, i) => `large-${i}`), updates.map((u) => Buffer.from(u))],
  )
  const sizes = await stack.db.query<{ seq: string; bytes: number }>("SELECT stream_seq AS seq, octet_length(update) AS bytes FROM op_log WHERE tenant = 'acme' AND doc_id = 'hist/large' ORDER BY id DESC")
  const sum = (entries: HistoryPage['entries']) => entries.reduce((n, e) => n + e.bytes, 0)

  const first = await historyPage('hist/large', tok, '?limit=500')
  t.ok(first.entries.length > 1 && first.entries.length < 10, `the first page ends early: ${first.entries.length} of 10 entries`)
  t.ok(sum(first.entries.slice(0, -1)) < HISTORY_MAX_PAGE_BYTES && sum(first.entries) >= HISTORY_MAX_PAGE_BYTES, 'it holds updates while they are under the budget, and stops at it')
  t.not(first.next, null, 'and says there is more')
  const seen = [...first.entries]
  for (let cursor = first.next, pages = 1; cursor !== null && pages < 10; pages++) {
    const page: HistoryPage = await historyPage('hist/large', tok, `?limit=500&before=${encodeURIComponent(cursor)}`)
    t.ok(page.entries.length >= 1 && sum(page.entries.slice(0, -1)) < HISTORY_MAX_PAGE_BYTES, 'every page holds an entry, within the budget')
    seen.push(...page.entries)
    cursor = page.next
  }
  t.same(seen.map((e) => ({ seq: e.seq, bytes: e.bytes })), sizes.rows.map((r) => ({ seq: Number(r.seq), bytes: r.bytes })), 'every entry once, newest first, with its size in bytes')
  t.ok(seen.every((e) => e.clients.length === 1 && e.clients[0] === author.clientID && e.user === 'hank'), 'each names its Yjs client')
})

t.test('core - history is tenant-scoped like state: another tenant 404, no token 401, doc outside the token 403', async (t) => {
  const tok = await token({ tenant: 'acme', docs: ['scoped/*'] })
  await postEdits('scoped/doc', 'erin', new Y.Doc(), 1)
  await until('committed', async () => (await opLog('scoped/doc')).length === 1)
  t.equal((await fetch(docUrl('scoped/doc', 'history'), { headers: bearer(tok) })).status, 200, 'its tenant reads it')
  const globex = await token({ tenant: 'globex' })
  for (const view of ['history', 'state']) {
    t.equal((await fetch(docUrl('scoped/doc', view), { headers: bearer(globex) })).status, 404, `${view}: another tenant gets 404`)
    t.equal((await fetch(docUrl('scoped/doc', view))).status, 401, `${view}: no token`)
    t.equal((await fetch(docUrl('other/doc', view), { headers: bearer(tok) })).status, 403, `${view}: doc outside the token`)
    t.equal((await fetch(docUrl('scoped/none', view), { headers: bearer(tok) })).status, 404, `${view}: no such document`)
  }
  await postEdits('scoped/doc', 'gina', new Y.Doc(), 2, 'globex')
  await until('globex’s own doc of that id committed', async () => (await opLog('scoped/doc', 'globex')).length === 2)
  t.same((await historyPage('scoped/doc', globex)).entries.map((e) => e.user), ['gina', 'gina'], 'the same doc id in another tenant: only its own entries')
  t.same((await historyPage('scoped/doc', tok)).entries.map((e) => e.user), ['erin'], 'and the first tenant still only its own')
})

t.test('core - state and history answers carry the last applied stream sequence and its commit time', async (t) => {
  const tok = await token({ tenant: 'acme' })
  await postEdits('stale', 'frank', new Y.Doc(), 3)
  await until('committed', async () => (await opLog('stale')).length === 3)
  const newest = (
    await stack.db.query<{ seq: string; at: Date }>(
      'SELECT stream_seq AS seq, committed_at AS at FROM op_log WHERE tenant = $1 AND doc_id = $2 ORDER BY stream_seq DESC, id DESC LIMIT 1',
      ['acme', 'stale'],
    )
  ).rows[0]!
  for (const view of ['state', 'history']) {
    const res = await fetch(docUrl('stale', view), { headers: bearer(tok) })
    t.equal(res.status, 200, view)
    t.equal(res.headers.get(LAST_SEQ_HEADER), String(newest.seq), `${view}: the doc’s highest op-log stream_seq`)
    t.equal(res.headers.get(LAST_SEQ_TIME_HEADER), newest.at.toISOString(), `${view}: its commit time`)
    await res.arrayBuffer()
  }
  const state = await fetch(docUrl('stale', 'state'), { headers: bearer(tok) })
  t.equal(state.headers.get('content-type'), 'application/octet-stream', 'state body unchanged')
  const doc = new Y.Doc()
  Y.applyUpdate(doc, new Uint8Array(await state.arrayBuffer()))
  t.equal(doc.getText('t').toString(), '210')
})
