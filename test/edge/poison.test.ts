import t from 'tap'
import * as Y from 'yjs'
import { CloseCode, HTTP_INGEST_PATH, Limit } from '../../contracts/mod.ts'
import { LOOPBACK_LIMITS, setup, token } from '../helpers/setup.ts'
import { docContents, materializedText, readState, until, yclient } from '../helpers/client.ts'
import { RawSocket, frames, upgradeStatus } from '../helpers/raw-socket.ts'
import { counterValue } from '../helpers/metric-value.ts'
import { inspectUpdate } from '../../edge/protocol.ts'
import { lacksDependencies } from '../../edge/update-shape.ts'
import { decodes, mutateUntil, richEdit, trial } from '../helpers/mutants.ts'
import { forgeNextClocks, itemsUpdate, malformedEdit, mapEntryWithRightNeighbour, misplacedEdit, releaseCase, resplicedEdit, textItem } from '../helpers/edits.ts'
import { malformedUpdate } from '../../runtime/yjs-items.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()
// The tests here poison and then connect again as the same user: the cooldown has its own test and edge.
const { edge, url } = await stack.edge({ limits: { ...LOOPBACK_LIMITS, poisonedUserCooldownMs: 0 } })

t.test('edge - a poisoned update closes only its sender with 4422, is never published, and the edge keeps serving', async (t) => {
  const tok = await token({ tenant: 'acme' })
  // Fixed client ids, so the seeded search for a poisoned mutant finds the same one every run.
  const writerDoc = new Y.Doc()
  writerDoc.clientID = 1_001
  const writer = yclient(url, 'poisoned', tok, writerDoc)
  const coEditor = yclient(url, 'poisoned', tok)
  t.teardown(() => (writer.destroy(), coEditor.destroy()))
  await Promise.all([writer.synced(), coEditor.synced()])
  writer.text.insert(0, 'before ')
  await until('co-editor has the first edit', () => coEditor.text.toString() === 'before ')
  let coEditorClosed = false
  coEditor.provider.on('connection-close', () => (coEditorClosed = true))

  const state = Y.encodeStateAsUpdate(writer.doc)
  const attacker = new Y.Doc()
  attacker.clientID = 1_002
  Y.applyUpdate(attacker, state)
  const sv = Y.encodeStateVector(attacker)
  richEdit(attacker, 'a')
  // One whose dependencies are all there (else the edge drops it as incomplete, without a close).
  // Most such mutants are malformed (runtime/yjs-items.ts), refused before any trial, as poisoned too.
  const poisoned = mutateUntil(Y.encodeStateAsUpdate(attacker, sv), (m) => decodes(m) && trial([state], m) === 'throws' && (malformedUpdate(m) !== null || !lacksDependencies(inspectUpdate(m), writer.doc)))

  const raw = await RawSocket.open(url, 'poisoned', tok)
  const publishedBefore = await counterValue(edge.metrics.updatesPublished)
  raw.send(frames.update(poisoned))
  const outcome = await raw.ping()
  t.equal(outcome === 'alive' ? 'alive' : outcome.code, CloseCode.InvalidUpdate, 'sender closed with 4422')
  t.equal(await counterValue(edge.metrics.updatesRejected, { reason: 'poisoned' }), 1, 'the reject is counted')

  writer.text.insert(7, 'after')
  await until('co-editor still gets edits', () => coEditor.text.toString() === 'before after')
  await until('materialized', async () => (await materializedText(core.url, 'poisoned', tok)) === 'before after')
  t.equal(await counterValue(edge.metrics.updatesPublished), publishedBefore + 1, 'only the honest edit was published')
  t.notOk(coEditorClosed, 'the co-editor socket stayed open')
  const dead = await stack.db.query("SELECT count(*)::int AS n FROM dead_letters WHERE doc_id = 'poisoned'")
  t.equal(dead.rows[0].n, 0, 'core dead-lettered nothing: the edge published nothing that does not apply')
})

t.test('edge - an update with missing dependencies is not published, so the innocent update that fills the gap is not blamed', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const reader = yclient(url, 'pending', tok)
  t.teardown(() => reader.destroy())
  await reader.synced()
  // Client 4242's first edit (the gap filler), and another client's item after its last
  // character: pending until the filler is in. (Mutants that Yjs throws on once the gap fills all
  // name a parent their client has not made: refused as malformed, edge/protocol.ts.)
  const source = new Y.Doc()
  source.clientID = 4242
  source.getText('t').insert(0, 'abc')
  const first = Y.encodeStateAsUpdate(source)
  const poisonedLater = itemsUpdate([textItem(66, 0, 'X', { origin: Y.createID(4242, 2) })])
  t.equal(trial([], poisonedLater), 'pending')

  const attacker = await RawSocket.open(url, 'pending', tok)
  const innocent = await RawSocket.open(url, 'pending', tok)
  const rejectedBefore = await counterValue(edge.metrics.updatesRejected, { reason: 'missing-dependencies' })
  attacker.send(frames.update(poisonedLater))
  t.equal(await attacker.ping(), 'alive', 'an update with a gap is dropped, not a reason to close')
  t.equal(await counterValue(edge.metrics.updatesRejected, { reason: 'missing-dependencies' }), rejectedBefore + 1, 'the drop is counted')

  innocent.send(frames.update(first))
  t.equal(await innocent.ping(), 'alive', 'the innocent sender is not closed')
  await until('the innocent edit reaches other clients', () => reader.text.toString() === 'abc')
  await until('and is materialized', async () => (await materializedText(core.url, 'pending', tok)) === 'abc')
  t.equal(await counterValue(edge.metrics.updatesRejected, { reason: 'poisoned' }), 1, 'no poisoned update besides the first test')
  const dead = await stack.db.query("SELECT count(*)::int AS n FROM dead_letters WHERE doc_id = 'pending'")
  t.equal(dead.rows[0].n, 0, 'nothing reached core that does not apply')
  attacker.close()
  innocent.close()
})

t.test('edge - an update with a gap inside it (a Skip) is dropped as pending on every repeat, with no trial apply and no probe rebuild', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const writer = yclient(url, 'skipped', tok)
  const reader = yclient(url, 'skipped', tok)
  t.teardown(() => (writer.destroy(), reader.destroy()))
  await Promise.all([writer.synced(), reader.synced()])
  writer.text.insert(0, 'base')
  await until('the base is materialized', async () => (await materializedText(core.url, 'skipped', tok)) === 'base')
  // A fresh client's clocks 0 and 6 merged (Y.mergeUpdates puts a Skip over clocks 1-5): it starts
  // at the doc's state for its client, so only the Skip shows the gap.
  const source = new Y.Doc()
  source.clientID = 4_343
  const map = source.getMap('m')
  map.set('k', 0)
  const head = Y.encodeStateAsUpdate(source)
  for (let i = 1; i <= 5; i++) map.set('k', i)
  const sv = Y.encodeStateVector(source)
  map.set('z', 1)
  const skipped = Y.mergeUpdates([head, Y.encodeStateAsUpdate(source, sv)])
  t.same(Y.decodeUpdate(skipped).structs.map((s) => [s.constructor.name, s.id.clock, s.length]), [['Item', 0, 1], ['Skip', 1, 5], ['Item', 6, 1]], 'the update holds a Skip')

  const attacker = await RawSocket.open(url, 'skipped', tok)
  t.teardown(() => attacker.close())
  const publishedBefore = await counterValue(edge.metrics.updatesPublished)
  const rejectedBefore = await counterValue(edge.metrics.updatesRejected, { reason: 'missing-dependencies' })
  const step1s = () => attacker.received.filter((kind) => kind === 'sync-step1').length
  const step1sBefore = step1s() // the edge's own step 1 when the socket opened
  const builds = await counterValue(edge.metrics.probeBuilds)
  for (let i = 0; i < 7; i++) attacker.send(frames.update(skipped))
  t.equal(await attacker.ping(), 'alive', 'a gap is dropped, not a reason to close')
  t.equal(await counterValue(edge.metrics.updatesRejected, { reason: 'missing-dependencies' }), rejectedBefore + 7, 'every repeat is dropped as missing dependencies')
  t.equal(step1s(), step1sBefore + 1, 'its sender is asked to resync once')

  // A new socket's first update continuing its own clocks but placed after an item the doc does not
  // have (the writer's clocks past its state): seen before any apply too, on every connection.
  const ahead = new Y.Doc()
  Y.applyUpdate(ahead, Y.encodeStateAsUpdate(writer.doc))
  ahead.clientID = writer.doc.clientID
  ahead.getText('t').insert(4, 'XYZ')
  const known = Y.encodeStateVector(ahead)
  ahead.clientID = 4_344
  ahead.getText('t').insert(7, '!')
  const afterUnknown = Y.encodeStateAsUpdate(ahead, known)
  for (let i = 0; i < 3; i++) {
    const fresh = await RawSocket.open(url, 'skipped', tok)
    fresh.send(frames.update(afterUnknown))
    t.equal(await fresh.ping(), 'alive')
    fresh.close()
  }
  t.equal(await counterValue(edge.metrics.probeBuilds), builds, 'no frame built the probe again (each build encodes and applies the whole document)')

  writer.text.insert(4, ' after')
  await until('the room still serves its clients', () => reader.text.toString() === 'base after')
  await until('and core', async () => (await materializedText(core.url, 'skipped', tok)) === 'base after')
  t.equal(await counterValue(edge.metrics.updatesPublished), publishedBefore + 1, 'only the honest edit was published')
  t.equal(reader.doc.getMap('m').size, 0, 'the reader never got it')
  const doc = await readState(core.url, 'skipped', tok)
  t.equal(doc instanceof Y.Doc && doc.getMap('m').size, 0, 'core never got it')
})

t.test("edge - a socket cannot write into another live client's clock range: the forgery is not published and the author's edit wins everywhere", async (t) => {
  const tok = await token({ tenant: 'acme' })
  const authorDoc = new Y.Doc()
  authorDoc.clientID = 7_007
  const author = yclient(url, 'forged', tok, authorDoc)
  const reader = yclient(url, 'forged', tok)
  t.teardown(() => (author.destroy(), reader.destroy()))
  await Promise.all([author.synced(), reader.synced()])
  author.text.insert(0, 'mine ')
  await until('the reader has the author edit', () => reader.text.toString() === 'mine ')

  // The forger builds the author's NEXT clocks with other content and sends them first.
  const forgerDoc = new Y.Doc()
  Y.applyUpdate(forgerDoc, Y.encodeStateAsUpdate(authorDoc))
  forgerDoc.clientID = 7_007 // after the apply: Yjs gives a doc a new id when remote structs carry its own
  const before = Y.encodeStateVector(forgerDoc)
  forgerDoc.getText('t').insert(5, 'FORGED')
  const forged = Y.encodeStateAsUpdate(forgerDoc, before)
  const forger = await RawSocket.open(url, 'forged', tok)
  t.teardown(() => forger.close())
  const refused = await counterValue(edge.metrics.updatesRejected, { reason: 'foreign-client' })
  forger.send(frames.update(forged))
  await until('the forgery is refused', async () => (await counterValue(edge.metrics.updatesRejected, { reason: 'foreign-client' })) === refused + 1)

  author.text.insert(5, 'real')
  await until('the reader has the real edit', () => reader.text.toString() === 'mine real')
  await until('core materialized the real edit', async () => (await materializedText(core.url, 'forged', tok)) === 'mine real', 20_000)
  t.equal(author.text.toString(), 'mine real', 'the author and the server agree')
})

t.test("edge - a co-editor cannot write into the clocks an offline author has not sent yet: the author's offline edit wins everywhere on its return", async (t) => {
  const authorTok = await token({ tenant: 'acme', sub: 'author' })
  const coEditorTok = await token({ tenant: 'acme', sub: 'co-editor' })
  const authorDoc = new Y.Doc()
  authorDoc.clientID = 7_008
  const author = yclient(url, 'offline-forged', authorTok, authorDoc)
  const reader = yclient(url, 'offline-forged', coEditorTok)
  t.teardown(() => reader.destroy())
  await Promise.all([author.synced(), reader.synced()])
  author.text.insert(0, 'mine ')
  await until('the reader has the author edit', () => reader.text.toString() === 'mine ')
  author.destroy()
  authorDoc.getText('t').insert(5, 'offline') // typed with no connection: clocks the server has not seen

  // The co-editor (its reader keeps the room open) sends other content under those clocks first.
  const forgerDoc = new Y.Doc()
  Y.applyUpdate(forgerDoc, Y.encodeStateAsUpdate(reader.doc))
  forgerDoc.clientID = 7_008
  const before = Y.encodeStateVector(forgerDoc)
  forgerDoc.getText('t').insert(5, 'FORGED')
  const forger = await RawSocket.open(url, 'offline-forged', coEditorTok)
  t.teardown(() => forger.close())
  const refused = await counterValue(edge.metrics.updatesRejected, { reason: 'foreign-client' })
  forger.send(frames.update(Y.encodeStateAsUpdate(forgerDoc, before)))
  await until('the forgery is refused', async () => (await counterValue(edge.metrics.updatesRejected, { reason: 'foreign-client' })) === refused + 1)

  const back = yclient(url, 'offline-forged', authorTok, authorDoc)
  t.teardown(() => back.destroy())
  await until('the reader has the offline edit', () => reader.text.toString() === 'mine offline')
  await until('core materialized it', async () => (await materializedText(core.url, 'offline-forged', coEditorTok)) === 'mine offline', 20_000)
  t.equal(authorDoc.getText('t').toString(), 'mine offline', 'the author and the server agree')
})

t.test("edge - a room opened after an author left knows from core whose client ids are whose: a co-editor's forgery over a socket or HTTP is refused, the offline edit wins", async (t) => {
  const docId = 'reopen-forged'
  const authorTok = await token({ tenant: 'acme', sub: 'author' })
  const coEditorTok = await token({ tenant: 'acme', sub: 'co-editor' })
  const authorDoc = new Y.Doc()
  authorDoc.clientID = 7_009
  const author = yclient(url, docId, authorTok, authorDoc)
  await author.synced()
  author.text.insert(0, 'mine ')
  await until('core materialized it', async () => (await materializedText(core.url, docId, authorTok)) === 'mine ', 20_000)
  author.destroy()
  await until('the room closed', async () => (await counterValue(edge.metrics.rooms)) === 0)
  authorDoc.getText('t').insert(5, 'offline')

  // A new room: its only knowledge of client 7_009 is core's state reply.
  const reader = yclient(url, docId, coEditorTok)
  t.teardown(() => reader.destroy())
  await reader.synced()
  const forger = await RawSocket.open(url, docId, coEditorTok)
  t.teardown(() => forger.close())
  const refused = await counterValue(edge.metrics.updatesRejected, { reason: 'foreign-client' })
  forger.send(frames.update(forgeNextClocks(reader.doc, 7_009, 'FORGED', 5)))
  await until('the socket forgery is refused', async () => (await counterValue(edge.metrics.updatesRejected, { reason: 'foreign-client' })) === refused + 1)
  const post = await fetch(`${url.replace(/^ws/, 'http')}${HTTP_INGEST_PATH}/${docId}/updates`, {
    method: 'POST',
    headers: { authorization: `Bearer ${coEditorTok}`, 'idempotency-key': 'reopen-forged', 'content-type': 'application/octet-stream' },
    body: forgeNextClocks(reader.doc, 7_009, 'POSTED', 5) as BodyInit,
  })
  t.equal(post.status, 403, `the HTTP forgery is refused: ${await post.text()}`)
  // A relay of the author's structs the room holds, with the co-editor's own new ones, is no forgery.
  const relay = new Y.Doc()
  Y.applyUpdate(relay, Y.encodeStateAsUpdate(reader.doc))
  relay.getText('t').insert(0, '>')
  const relayed = await fetch(`${url.replace(/^ws/, 'http')}${HTTP_INGEST_PATH}/${docId}/updates`, {
    method: 'POST',
    headers: { authorization: `Bearer ${coEditorTok}`, 'idempotency-key': 'reopen-relay', 'content-type': 'application/octet-stream' },
    body: Y.encodeStateAsUpdate(relay) as BodyInit,
  })
  t.equal(relayed.status, 202, 'a whole-document post with its own new char is taken')
  await until('the reader has the relay', () => reader.text.toString() === '>mine ')
  relay.getText('t').insert(1, '>') // and over a socket
  forger.send(frames.update(Y.encodeStateAsUpdate(relay)))
  await until('the reader has the socket relay', () => reader.text.toString() === '>>mine ')

  const back = yclient(url, docId, authorTok, authorDoc)
  t.teardown(() => back.destroy())
  await until('the reader has the offline edit', () => reader.text.toString() === '>>mine offline')
  await until('core materialized it', async () => (await materializedText(core.url, docId, coEditorTok)) === '>>mine offline', 20_000)
  t.equal(authorDoc.getText('t').toString(), '>>mine offline', 'the author and the server agree')
})

t.test("edge - a socket update releasing a misplaced item core holds pending is refused by the room as by core: no client gets it", async (t) => {
  const tok = await token({ tenant: 'acme' })
  const docId = 'room-release'
  const { base, mapEntry, arrayItem } = releaseCase(10, 10) // 10:1, its right neighbour the map entry 10:0
  const post = (body: Uint8Array, key: string) =>
    fetch(`${url.replace(/^ws/, 'http')}${HTTP_INGEST_PATH}/${docId}/updates`, { method: 'POST', headers: { authorization: `Bearer ${tok}`, 'idempotency-key': key, 'content-type': 'application/octet-stream' }, body: body as BodyInit })
  t.equal((await post(base, 'release-base')).status, 202)
  t.equal((await post(arrayItem, 'release-item')).status, 202, 'no room holds the document: published untried')
  await until('core holds both (the item pending)', async () => (await stack.db.query('SELECT count(*)::int AS n FROM op_log WHERE doc_id = $1', [docId])).rows[0].n === 2)

  const reader = yclient(url, docId, tok)
  t.teardown(() => reader.destroy())
  await reader.synced()
  const releaser = await RawSocket.open(url, docId, tok)
  t.teardown(() => releaser.close())
  releaser.send(frames.update(mapEntry))
  const closed = await Promise.race([releaser.closed, new Promise<null>((r) => setTimeout(() => r(null), 3_000))])
  t.equal(closed?.code, CloseCode.InvalidUpdate, 'its sender is closed as poisoned')
  const stored = await readState(core.url, docId, tok)
  t.same(stored instanceof Y.Doc && docContents(stored).a, [1, 2], 'core has no misplaced item')
  t.same(docContents(reader.doc), stored instanceof Y.Doc ? docContents(stored) : null, 'the reader has what core has')
})

t.test('edge - an item naming one struct as both its neighbours is refused as poisoned (4422) and never published, over a socket and over HTTP (400)', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const { base, malformed } = malformedEdit()
  const writer = await RawSocket.open(url, 'malformed', tok)
  writer.send(frames.update(base))
  await until('the base text is materialized', async () => (await materializedText(core.url, 'malformed', tok)) === 'ab')
  const publishedBefore = await counterValue(edge.metrics.updatesPublished)
  const raw = await RawSocket.open(url, 'malformed', tok)
  raw.send(frames.update(malformed))
  const closed = await raw.closed
  t.equal(closed.code, CloseCode.InvalidUpdate)
  const res = await fetch(`${url.replace(/^ws/, 'http')}${HTTP_INGEST_PATH}/malformed/updates`, { method: 'POST', headers: { authorization: `Bearer ${tok}`, 'idempotency-key': 'malformed-1', 'content-type': 'application/octet-stream' }, body: malformed as BodyInit })
  t.equal(res.status, 400)
  t.match(await res.text(), /same struct as its left and right neighbour/)
  t.ok(writer.isOpen, 'the other socket stays')
  t.equal(await counterValue(edge.metrics.updatesPublished), publishedBefore, 'nothing published')
  t.equal(await materializedText(core.url, 'malformed', tok), 'ab')
  writer.close()
})

t.test('edge - a user whose update did not apply cannot connect to that edge for a while (429 before any token work); other users can', async (t) => {
  const guarded = await stack.edge() // the default cooldown
  const { base, malformed } = malformedEdit()
  const honest = await token({ tenant: 'acme', sub: 'honest' })
  const poisoner = await token({ tenant: 'acme', sub: 'poisoner' })
  const writer = await RawSocket.open(guarded.url, 'cooldown', honest)
  t.teardown(() => writer.close())
  writer.send(frames.update(base))
  await until('the base text is materialized', async () => (await materializedText(core.url, 'cooldown', honest)) === 'ab')
  const raw = await RawSocket.open(guarded.url, 'cooldown', poisoner)
  raw.send(frames.update(malformed))
  t.equal((await raw.closed).code, CloseCode.InvalidUpdate)
  // Each such update costs the room a rebuild from the whole document: a reconnecting sender would repeat it.
  t.equal(await upgradeStatus(`${guarded.url}/cooldown?token=${poisoner}`), 429, 'the poisoner is refused before the upgrade')
  t.equal(await upgradeStatus(`${guarded.url}/other-doc?token=${poisoner}`), 429, 'on every document of that edge')
  t.equal(await counterValue(guarded.edge.metrics.limitRefusals, { tenant: 'acme', limit: Limit.PoisonedUser }), 2, 'counted with the tenant')
  t.equal(await upgradeStatus(`${guarded.url}/cooldown?token=${honest}`), 101, 'another user of the tenant connects')
})

for (const [what, forged] of [
  ['whose right neighbour is in another list', () => misplacedEdit()],
  ['restarting its client below its clock with other content (its tail hangs in another list)', () => resplicedEdit()],
] as const) {
  t.test(`edge - an item ${what} is refused as poisoned (4422) and never published`, async (t) => {
    const tok = await token({ tenant: 'acme' })
    const edit = forged()
    const docId = `misplaced-${edit.base.byteLength}`
    // The base comes from a socket that then leaves, so its client id is free for the forger.
    const seeder = await RawSocket.open(url, docId, tok)
    seeder.send(frames.update(edit.base))
    await until('the base is materialized', async () => (await readState(core.url, docId, tok)) instanceof Y.Doc)
    seeder.close()
    const watcher = await RawSocket.open(url, docId, tok)
    const held = docContents(watcher.mirror)
    t.same(held.m, { k: 'v' }, 'the watcher holds the base')
    const publishedBefore = await counterValue(edge.metrics.updatesPublished)
    const raw = await RawSocket.open(url, docId, tok)
    raw.send(frames.update('misplaced' in edit ? edit.misplaced : edit.respliced))
    t.equal((await raw.closed).code, CloseCode.InvalidUpdate)
    t.equal(await watcher.ping(), 'alive', 'the other socket stays, and the edge serves it')
    t.same(docContents(watcher.mirror), held, 'the room never took it')
    t.equal(await counterValue(edge.metrics.updatesPublished), publishedBefore, 'nothing published')
    const doc = await readState(core.url, docId, tok)
    t.same(doc instanceof Y.Doc && docContents(doc), held, 'core never took it')
    watcher.close()
  })
}

t.test("edge - a flood of misplaced frames from many sockets is refused untried: none costs the room a probe rebuild (an encode and apply of the whole document)", async (t) => {
  const tok = await token({ tenant: 'acme' })
  const docId = 'probe-flood'
  const base = new Y.Doc()
  base.clientID = 21
  base.getMap('m').set('k', 1)
  base.getText('t').insert(0, 'x'.repeat(10_000))
  const seeder = await RawSocket.open(url, docId, tok)
  seeder.send(frames.update(Y.encodeStateAsUpdate(base)))
  await until('the base is materialized', async () => (await readState(core.url, docId, tok)) instanceof Y.Doc)
  seeder.close()
  const watcher = await RawSocket.open(url, docId, tok)
  t.teardown(() => watcher.close())
  const builds = await counterValue(edge.metrics.probeBuilds)
  const poisonedBefore = await counterValue(edge.metrics.updatesRejected, { reason: 'poisoned' })
  // 14 bytes each: an item naming the map entry 21:0 as its right neighbour (no Yjs client makes one).
  const codes = await Promise.all(
    Array.from({ length: 12 }, async (_, i) => {
      const raw = await RawSocket.open(url, docId, tok)
      raw.send(frames.update(mapEntryWithRightNeighbour(100 + i, { client: 21, clock: 0 })))
      return (await raw.closed).code
    }),
  )
  t.same(new Set(codes), new Set([CloseCode.InvalidUpdate]), 'each sender closed with 4422')
  t.equal(await counterValue(edge.metrics.updatesRejected, { reason: 'poisoned' }), poisonedBefore + 12, 'each counted as poisoned')
  t.equal(await counterValue(edge.metrics.probeBuilds), builds, 'no probe was built for them')
  t.equal(await watcher.ping(), 'alive', 'the room serves its other socket')
  t.same(docContents(watcher.mirror).m, { k: 1 }, 'the room never took one')
})

t.test('edge - an update reusing ids the document holds with other content (a client id from another session) is refused with 4422 and never published', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const reader = yclient(url, 'reused-id', tok)
  t.teardown(() => reader.destroy())
  await reader.synced()
  // A first session of client 77 puts one item of three values into the array; it leaves.
  const first = new Y.Doc()
  first.clientID = 77
  first.getArray('a').insert(0, ['a', 'b', 'c'])
  const one = await RawSocket.open(url, 'reused-id', tok)
  one.send(frames.update(Y.encodeStateAsUpdate(first)))
  await until('the reader has the first session', () => reader.doc.getArray('a').length === 3)
  // Counted once core holds it: the reader sees an edit as soon as JetStream stores it, before core commits.
  await until('core has the first session', async () => {
    const doc = await readState(core.url, 'reused-id', tok)
    return doc instanceof Y.Doc && doc.getArray('a').length === 3
  })
  one.close()
  await one.closed
  // A second session under the same id starts over at clock 0 with other content, past the held clocks:
  // Yjs would keep a, b, c for clocks 0-2 and hang y, z off ids that mean other items here.
  const second = new Y.Doc()
  second.clientID = 77
  second.getArray('a').insert(0, ['x', 'y', 'z', 'w'])
  const two = await RawSocket.open(url, 'reused-id', tok)
  const rowsBefore = (await stack.db.query("SELECT count(*)::int AS n FROM op_log WHERE doc_id = 'reused-id'")).rows[0].n as number
  two.send(frames.update(Y.encodeStateAsUpdate(second)))
  const outcome = await two.ping() // the edge answers a sync step 1 after the frames before it
  t.equal(outcome === 'alive' ? 'alive' : outcome.code, CloseCode.InvalidUpdate, 'its sender is closed with 4422')
  const marker = new Y.Doc()
  marker.clientID = 78
  Y.applyUpdate(marker, Y.encodeStateAsUpdate(reader.doc))
  const sv = Y.encodeStateVector(marker)
  marker.getText('t').insert(0, 'after')
  const three = await RawSocket.open(url, 'reused-id', tok)
  t.teardown(() => three.close())
  three.send(frames.update(Y.encodeStateAsUpdate(marker, sv)))
  await until('a later edit arrives', () => reader.text.toString() === 'after')
  // Per-document order: once core holds the later edit, it holds anything published before it.
  await until('core has the later edit', async () => (await materializedText(core.url, 'reused-id', tok)) === 'after')
  t.same(reader.doc.getArray('a').toJSON(), ['a', 'b', 'c'], 'the reader never got it')
  t.equal((await stack.db.query("SELECT count(*)::int AS n FROM op_log WHERE doc_id = 'reused-id'")).rows[0].n, rowsBefore + 1, 'only the later edit was published')
})
