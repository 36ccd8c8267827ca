import t from 'tap'
import * as Y from 'yjs'
import { jetstream } from '@nats-io/jetstream'
import { ROLLBACK_MAX_BODY_BYTES, RollbackAnswer, editIngestSubject, editMsgId, encodeEnvelope } from '../../contracts/mod.ts'
import { join } from 'node:path'
import { rollback as computeAndSend } from '../../core/rollback.ts'
import { FsBlobStore } from '../../runtime/blobs/fs-store.ts'
import { createLogger } from '../../runtime/log.ts'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient, type TestClient } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const edge = await stack.edge()
// Rollback updates go through this edge's HTTP ingest, like any client's edit.
const core = await stack.core({ edgeUrl: edge.url.replace(/^ws:/, 'http:') })

const rollbackUrl = (docId: string) => `${core.url}/v1/docs/${encodeURIComponent(docId)}/rollback`
const post = (docId: string, tok: string, body: string) => fetch(rollbackUrl(docId), { method: 'POST', body, headers: { authorization: `Bearer ${tok}`, 'content-type': 'application/json' } })

async function rollback(docId: string, tok: string, request: object): Promise<RollbackAnswer> {
  const res = await post(docId, tok, JSON.stringify(request))
  if (res.status !== 202) throw new Error(`rollback ${JSON.stringify(request)}: ${res.status} ${await res.text()}`)
  return RollbackAnswer.parse(await res.json())
}

/** The document's op log, oldest first. */
async function opLog(docId: string) {
  const r = await stack.db.query<{ seq: string; user_id: string; msg_id: string }>('SELECT stream_seq AS seq, user_id, msg_id FROM op_log WHERE tenant = $1 AND doc_id = $2 ORDER BY id', ['acme', docId])
  return r.rows.map((row) => ({ seq: Number(row.seq), user: row.user_id, msgId: row.msg_id }))
}

/** Two connected stock clients of `docId`, alice's and bob's. */
async function twoClients(t: { teardown(fn: () => void): void }, docId: string): Promise<[TestClient, TestClient]> {
  const a = yclient(edge.url, docId, await token({ tenant: 'acme', sub: 'alice' }))
  const b = yclient(edge.url, docId, await token({ tenant: 'acme', sub: 'bob' }))
  t.teardown(() => {
    a.destroy()
    b.destroy()
  })
  await Promise.all([a.synced(), b.synced()])
  return [a, b]
}

/** Waits until the text is committed and both clients show it. */
async function settled(docId: string, clients: TestClient[], text: string): Promise<void> {
  const tok = await token({ tenant: 'acme' })
  await until(`"${text}" committed`, async () => (await materializedText(core.url, docId, tok)) === text)
  await until(`"${text}" on every client`, () => clients.every((c) => c.text.toString() === text))
}

t.test('core - rollback to a sequence restores the text on connected clients as the caller’s update, and a rollback to the sequence before it undoes it', async (t) => {
  const doc = 'rb/to'
  const [a, b] = await twoClients(t, doc)
  a.text.insert(0, 'Hello world')
  await settled(doc, [a, b], 'Hello world')
  const restorePoint = (await opLog(doc)).at(-1)!.seq
  b.text.insert(6, 'big ')
  await settled(doc, [a, b], 'Hello big world')
  a.text.delete(10, 5)
  a.text.insert(10, 'there')
  await settled(doc, [a, b], 'Hello big there')
  const before = await opLog(doc)

  const carol = await token({ tenant: 'acme', sub: 'carol' })
  const answer = await rollback(doc, carol, { to: restorePoint })
  t.equal(answer.status, 'accepted')
  t.equal(answer.basedOnSeq, before.at(-1)!.seq, 'computed against the document’s last sequence')
  t.ok(answer.bytes > 0)
  await settled(doc, [a, b], 'Hello world')
  const after = await opLog(doc)
  t.same(after.slice(0, before.length), before, 'the op log kept every row: append-only')
  t.same(after.slice(before.length).map((r) => ({ user: r.user, msgId: r.msgId })), [{ user: 'carol', msgId: answer.msgId }], 'one new row: the rollback, by the caller')
  t.match(await rollback(doc, carol, { to: restorePoint }), { status: 'unchanged', bytes: 0 }, 'the same rollback again: the text already reads so, nothing sent')

  // The rollback is an update like any other: restoring the sequence before it undoes it.
  const undo = await rollback(doc, carol, { to: String(before.at(-1)!.seq) })
  t.equal(undo.status, 'accepted')
  await settled(doc, [a, b], 'Hello big there')
  a.text.insert(0, '>')
  await settled(doc, [a, b], '>Hello big there')
})

t.test('core - rollback of one user’s changes since a time removes only that user’s edits and restores what they deleted', async (t) => {
  const doc = 'rb/user'
  const [a, b] = await twoClients(t, doc)
  a.text.insert(0, 'Hello ')
  await settled(doc, [a, b], 'Hello ')
  b.text.insert(6, 'world')
  await settled(doc, [a, b], 'Hello world')
  const since = new Date().toISOString()
  await until('the clock passed since', () => Date.now() > Date.parse(since) + 1)
  a.text.insert(0, 'XX')
  await settled(doc, [a, b], 'XXHello world')
  b.text.insert(13, '!')
  await settled(doc, [a, b], 'XXHello world!')
  a.text.delete(8, 1) // bob's "w", written before since
  await settled(doc, [a, b], 'XXHello orld!')

  const answer = await rollback(doc, await token({ tenant: 'acme', sub: 'bob' }), { user: 'alice', since })
  t.equal(answer.status, 'accepted')
  await settled(doc, [a, b], 'Hello world!')
  t.equal((await opLog(doc)).at(-1)!.user, 'bob', 'logged as the caller’s update')
  const none = await rollback(doc, await token({ tenant: 'acme', sub: 'bob' }), { user: 'nobody', since })
  t.same(none, { status: 'unchanged', basedOnSeq: (await opLog(doc)).at(-1)!.seq, bytes: 0 }, 'a user with no changes since: nothing sent')
})

t.test('core - rollback is for editors of their tenant’s documents and refuses bad bodies', async (t) => {
  const doc = 'rb/guards'
  const [a, b] = await twoClients(t, doc)
  a.text.insert(0, 'keep')
  await settled(doc, [a, b], 'keep')
  const seq = (await opLog(doc)).at(-1)!.seq
  const editor = await token({ tenant: 'acme', sub: 'dora' })
  const viewer = await token({ tenant: 'acme', sub: 'vic', role: 'viewer' })
  t.equal((await post(doc, viewer, JSON.stringify({ to: seq }))).status, 403, 'a viewer: 403')
  t.equal((await post(doc, viewer, 'not json')).status, 403, 'a viewer is refused by core before its body is read')
  t.equal((await post(doc, await token({ tenant: 'globex' }), JSON.stringify({ to: seq }))).status, 404, 'another tenant: 404')
  t.equal((await post('rb/none', editor, JSON.stringify({ to: seq }))).status, 404, 'no such document: 404')
  t.equal((await post(doc, await token({ tenant: 'acme', docs: ['other/*'] }), JSON.stringify({ to: seq }))).status, 403, 'a doc outside the token: 403')
  t.equal((await fetch(rollbackUrl(doc), { method: 'POST', body: '{}' })).status, 401, 'no token: 401')
  // 1e15 is past the 15 digits a stream sequence takes; 2026-02-30 is no date; a time needs its zone.
  for (const body of ['not json', '{}', '{"to":"yesterday"}', '{"to":-3}', '{"to":1e15}', '{"to":"2026-02-30T00:00:00Z"}', '{"to":"2026-01-01T00:00:00"}', '{"user":"a"}', '{"user":"a","since":"2026-01-01"}', '{"user":"a","since":"2025-02-29T00:00:00Z"}', '{"to":1,"user":"a","since":"2026-01-01T00:00:00Z"}']) {
    const res = await post(doc, editor, body)
    t.equal(res.status, 400, `${body}: 400`)
    t.match(await res.json(), { error: /body must be/ })
  }
  const query = await fetch(`${rollbackUrl(doc)}?to=${seq}`, { method: 'POST', body: JSON.stringify({ to: seq }), headers: { authorization: `Bearer ${editor}` } })
  t.same([query.status, await query.json()], [400, { error: 'unknown parameter to; rollback takes no query parameters' }], 'a query parameter: 400 (the body holds the request)')
  const big = await post(doc, editor, JSON.stringify({ to: 'x'.repeat(ROLLBACK_MAX_BODY_BYTES) }))
  t.equal(big.status, 413, 'a body past the limit: 413')
  const early = await post(doc, editor, JSON.stringify({ to: '2000-01-01T00:00:00Z' }))
  t.equal(early.status, 422, 'a time before the document: nothing to restore')
  t.equal((await fetch(rollbackUrl(doc), { headers: { authorization: `Bearer ${editor}` } })).status, 405, 'GET rollback: 405')
  t.same(await rollback(doc, editor, { to: seq }), { status: 'unchanged', basedOnSeq: seq, bytes: 0 }, 'a rollback to now changes nothing')
  t.equal((await opLog(doc)).length, 1, 'no refused or empty rollback reached the op log')
})

t.test('core - the same rollback against the same document state is the same update and lands once', async (t) => {
  const doc = 'rb/retry'
  const [a, b] = await twoClients(t, doc)
  a.text.insert(0, 'one')
  await settled(doc, [a, b], 'one')
  const point = (await opLog(doc)).at(-1)!.seq
  b.text.insert(3, ' two')
  await settled(doc, [a, b], 'one two')
  a.text.delete(0, 1) // restoring it re-inserts it under the rollback's own Yjs client id
  await settled(doc, [a, b], 'ne two')
  const basedOnSeq = (await opLog(doc)).at(-1)!.seq
  const deps = { pool: stack.db, blobs: await FsBlobStore.open(join(stack.dir, 'blobs')), edgeUrl: edge.url.replace(/^ws:/, 'http:'), edgeTimeoutMs: 10_000, log: createLogger('test', 'silent') }
  const target = { tenant: 'acme', docId: doc, user: 'carol', token: await token({ tenant: 'acme', sub: 'carol' }), basedOnSeq }
  const body = Buffer.from(JSON.stringify({ to: point }))
  // A client retrying after a lost answer: the request is computed again against the same state.
  const first = await computeAndSend(deps, target, body)
  await settled(doc, [a, b], 'one')
  const again = await computeAndSend(deps, target, body)
  t.equal(first.status, 202)
  t.equal(again.status, 202)
  t.match(first.body, { status: 'accepted', duplicate: false })
  t.match(again.body, { status: 'accepted', duplicate: true, msgId: (first.body as RollbackAnswer).msgId, idempotencyKey: (first.body as RollbackAnswer).idempotencyKey }, 'the same bytes and key: JetStream stored it once')
  a.text.insert(3, '!')
  await settled(doc, [a, b], 'one!')
  t.equal((await opLog(doc)).filter((r) => r.user === 'carol').length, 1, 'one rollback row in the op log')
})

t.test('core - two editors restoring the same point at once, however they spell it, send the same update: the text comes back once', async (t) => {
  const doc = 'rb/together'
  const [a, b] = await twoClients(t, doc)
  a.text.insert(0, 'Hello world')
  await settled(doc, [a, b], 'Hello world')
  const point = (await opLog(doc)).at(-1)!.seq
  b.text.delete(6, 5)
  await settled(doc, [a, b], 'Hello ')
  const basedOnSeq = (await opLog(doc)).at(-1)!.seq
  const deps = { pool: stack.db, blobs: await FsBlobStore.open(join(stack.dir, 'blobs')), edgeUrl: edge.url.replace(/^ws:/, 'http:'), edgeTimeoutMs: 10_000, log: createLogger('test', 'silent') }
  // Both computed against the same state (the same basedOnSeq), as two requests racing are.
  const [carol, dave] = await Promise.all(
    [
      ['carol', { to: point }],
      ['dave', { to: String(point) }],
    ].map(async ([user, request]) => computeAndSend(deps, { tenant: 'acme', docId: doc, user: user as string, token: await token({ tenant: 'acme', sub: user as string }), basedOnSeq }, Buffer.from(JSON.stringify(request)))),
  )
  t.equal(carol!.status, 202)
  t.equal(dave!.status, 202)
  t.equal((dave!.body as RollbackAnswer).msgId, (carol!.body as RollbackAnswer).msgId, 'the same bytes')
  await settled(doc, [a, b], 'Hello world')
  a.text.insert(11, '!')
  await settled(doc, [a, b], 'Hello world!')
  t.equal((await opLog(doc)).filter((r) => r.user === 'carol' || r.user === 'dave').length, 1, 'one of them in the op log: the other was a duplicate of it')
})

t.test('core - rollback of one user\'s changes since a time reverts an edit ingested after it though stored before an edit stamped earlier (edge clocks a few ms apart)', async (t) => {
  const doc = 'rb/skew'
  const js = jetstream(await stack.connect())
  const send = (update: Uint8Array, userId: string, ingestTs: number) =>
    js.publish(editIngestSubject('acme', doc), encodeEnvelope({ v: 1, tenant: 'acme', docId: doc, userId, update, ingestTs, edgeId: 'test' }), { msgID: editMsgId('acme', doc, update) })
  const alice = new Y.Doc()
  alice.clientID = 100
  const bob = new Y.Doc()
  bob.clientID = 200
  const start = Date.now() - 60_000
  bob.getText('t').insert(0, 'base ')
  const base = Y.encodeStateAsUpdate(bob)
  await send(base, 'bob', start)
  Y.applyUpdate(alice, base)
  const aliceBefore = Y.encodeStateVector(alice)
  alice.getText('t').insert(5, 'ALICE')
  const bobBefore = Y.encodeStateVector(bob)
  bob.getText('t').insert(0, '>')
  // Alice's edge runs 8 ms ahead of bob's: her edit is stored first, stamped after bob's.
  await send(Y.encodeStateAsUpdate(alice, aliceBefore), 'alice', start + 1_010)
  await send(Y.encodeStateAsUpdate(bob, bobBefore), 'bob', start + 1_002)
  const tok = await token({ tenant: 'acme', sub: 'carol' })
  await until('all three committed', async () => (await materializedText(core.url, doc, tok)) === '>base ALICE')
  const answer = await rollback(doc, tok, { user: 'alice', since: new Date(start + 1_005).toISOString() })
  t.equal(answer.status, 'accepted', 'alice\'s edit came after the time')
  await until('her edit reverted, bob\'s kept', async () => (await materializedText(core.url, doc, tok)) === '>base ')
})
