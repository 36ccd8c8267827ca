import t from 'tap'
import * as Y from 'yjs'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'
import { RawSocket, frames } from '../helpers/raw-socket.ts'
import { forgeNextClocks } from '../helpers/edits.ts'
import { HTTP_INGEST_PATH } from '../../contracts/mod.ts'
import { counterValue } from '../helpers/metric-value.ts'
import { seeded } from '../helpers/mutants.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()
const edgeA = await stack.edge()
const edgeB = await stack.edge()

t.test('edge - two stock y-websocket clients on one edge converge', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const a = yclient(edgeA.url, 'same-edge', tok)
  const b = yclient(edgeA.url, 'same-edge', tok)
  t.teardown(() => (a.destroy(), b.destroy()))
  await Promise.all([a.synced(), b.synced()])
  a.text.insert(0, 'hello ')
  b.text.insert(0, 'world ')
  await until('both clients see both edits', () => a.text.toString().length === 12 && a.text.toString() === b.text.toString())
  t.equal(a.text.toString(), b.text.toString())
  t.match(a.text.toString(), /hello/)
  t.match(a.text.toString(), /world/)
})

t.test('edge - clients on two edges converge through NATS and the edit is materialized', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const a = yclient(edgeA.url, 'cross-edge', tok)
  const b = yclient(edgeB.url, 'cross-edge', tok)
  t.teardown(() => (a.destroy(), b.destroy()))
  await Promise.all([a.synced(), b.synced()])
  a.text.insert(0, 'from A')
  await until('B sees A', () => b.text.toString() === 'from A')
  b.text.insert(6, ', from B')
  await until('A sees B', () => a.text.toString() === 'from A, from B')
  await until('read API has both', async () => (await materializedText(core.url, 'cross-edge', tok)) === 'from A, from B')
  t.pass('converged across edges and materialized')
})

t.test('edge - a document open on one edge fans nothing out; once a second edge opens it, edits flow both ways with no gap', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const fanned = async () => (await counterValue(edgeA.edge.metrics.fanSent, { kind: 'u' })) + (await counterValue(edgeB.edge.metrics.fanSent, { kind: 'u' }))
  const gaps = async () => (await counterValue(edgeA.edge.metrics.fanGaps)) + (await counterValue(edgeB.edge.metrics.fanGaps))
  const before = { fanned: await fanned(), gaps: await gaps() }
  const a1 = yclient(edgeA.url, 'alone-first', tok)
  const a2 = yclient(edgeA.url, 'alone-first', tok)
  t.teardown(() => (a1.destroy(), a2.destroy()))
  await Promise.all([a1.synced(), a2.synced()])
  for (const ch of 'alone') a1.text.insert(a1.text.length, ch)
  await until('the co-editor on the same edge has it', () => a2.text.toString() === 'alone')
  t.equal(await fanned(), before.fanned, 'no fan-out while no other edge holds the document')

  const b = yclient(edgeB.url, 'alone-first', tok)
  t.teardown(() => b.destroy())
  await b.synced()
  await until('the new edge starts with what was typed', () => b.text.toString() === 'alone')
  a1.text.insert(a1.text.length, ', then A')
  await until('B sees A through the fan-out', () => b.text.toString() === 'alone, then A')
  b.text.insert(b.text.length, ', then B')
  await until('A sees B', () => a1.text.toString() === 'alone, then A, then B' && a2.text.toString() === a1.text.toString())
  t.ok((await fanned()) > before.fanned, 'both edges fan out once they know of each other')
  t.equal(await gaps(), before.gaps, 'and no peer saw a gap')
})

t.test("edge - a room learns from a peer's fan-out whose client ids are whose: a co-editor's forgery there, over a socket or posted to another edge, never reaches its clients", async (t) => {
  const docId = 'cross-forged'
  const authorTok = await token({ tenant: 'acme', sub: 'author' })
  const coEditorTok = await token({ tenant: 'acme', sub: 'co-editor' })
  // No resync from core for this room: what it knows of the author's client comes from edge A's fan-out.
  const edgeC = await stack.edge({ resyncDelayMs: 120_000 })
  t.teardown(() => edgeC.stop())
  const reader = yclient(edgeC.url, docId, coEditorTok)
  t.teardown(() => reader.destroy())
  await reader.synced()
  const authorDoc = new Y.Doc()
  authorDoc.clientID = 7_010
  const author = yclient(edgeA.url, docId, authorTok, authorDoc)
  await author.synced()
  author.text.insert(0, 'mine ')
  await until('the reader on another edge has it', () => reader.text.toString() === 'mine ')
  author.destroy()
  authorDoc.getText('t').insert(5, 'offline')

  const forger = await RawSocket.open(edgeC.url, docId, coEditorTok)
  t.teardown(() => forger.close())
  forger.send(frames.update(forgeNextClocks(reader.doc, 7_010, 'FORGED', 5)))
  await until('the socket forgery is refused', async () => (await counterValue(edgeC.edge.metrics.updatesRejected, { reason: 'foreign-client' })) === 1)

  await until("edge A's room closed", async () => (await counterValue(edgeA.edge.metrics.rooms)) === 0)
  const skipped = await counterValue(edgeC.edge.metrics.roomApplyFailures, { source: 'fan' })
  const post = await fetch(`${edgeA.url.replace(/^ws/, 'http')}${HTTP_INGEST_PATH}/${docId}/updates`, {
    method: 'POST',
    headers: { authorization: `Bearer ${coEditorTok}`, 'idempotency-key': 'cross-forged', 'content-type': 'application/octet-stream' },
    body: forgeNextClocks(reader.doc, 7_010, 'POSTED', 5) as BodyInit,
  })
  t.equal(post.status, 202, 'edge A holds no room of the document: nothing to judge the post by there')
  await until('the room on edge C skips it', async () => (await counterValue(edgeC.edge.metrics.roomApplyFailures, { source: 'fan' })) === skipped + 1)

  const back = yclient(edgeC.url, docId, authorTok, authorDoc)
  t.teardown(() => back.destroy())
  await until('the reader has the offline edit', () => reader.text.toString() === 'mine offline')
  await until('core materialized it', async () => (await materializedText(core.url, docId, coEditorTok)) === 'mine offline', 20_000)
  t.equal(authorDoc.getText('t').toString(), 'mine offline', 'the author and the server agree')
})

t.test('edge - a doc opened on a fresh edge starts from the materialized state', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const a = yclient(edgeA.url, 'fresh-edge', tok)
  await a.synced()
  a.text.insert(0, 'persisted text')
  await until('materialized', async () => (await materializedText(core.url, 'fresh-edge', tok)) === 'persisted text')
  a.destroy()
  const edgeC = await stack.edge()
  const c = yclient(edgeC.url, 'fresh-edge', tok)
  t.teardown(() => c.destroy())
  await c.synced()
  t.equal(c.text.toString(), 'persisted text')
})

t.test('edge - awareness (presence) reaches clients on another edge', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const a = yclient(edgeA.url, 'presence', tok)
  const b = yclient(edgeB.url, 'presence', tok)
  t.teardown(() => (a.destroy(), b.destroy()))
  await Promise.all([a.synced(), b.synced()])
  a.provider.awareness.setLocalStateField('cursor', { index: 3 })
  await until('B sees A cursor', () => (b.provider.awareness.getStates().get(a.doc.clientID) as { cursor?: { index: number } } | undefined)?.cursor?.index === 3)
  t.pass('presence fanned out')
})

t.test('edge - a room opens without waiting out the peer state request when no other edge holds the document', async (t) => {
  // The room's own df.room subscription must not count as a responder (the edge connects with
  // noEcho, so nats-server answers "no responders" at once); otherwise every open waits the timeout.
  const slowPeers = await stack.edge({ stateTimeoutMs: 20_000 })
  const tok = await token({ tenant: 'acme' })
  const started = performance.now()
  const a = yclient(slowPeers.url, 'lonely-room', tok)
  t.teardown(() => a.destroy())
  await a.synced()
  const openMs = performance.now() - started
  t.ok(openMs < 10_000, `synced in ${Math.round(openMs)} ms, well before the 20 s state timeout`)
})

t.test('edge - a joiner after hundreds of edits of mixed sizes gets each of them, in order', async (t) => {
  // The edits wait for the room doc packed in one buffer (edge/room-doc.ts): 300 of them cross
  // its flush at 256 and its growth many times, and the last 44 are taken out at the join. A
  // room doc that lost edits would be mended by the resync after the room opened: not within this test.
  const edge = await stack.edge({ resyncDelayMs: 120_000 })
  const tok = await token({ tenant: 'acme' })
  const writer = yclient(edge.url, 'packed-edits', tok)
  t.teardown(() => writer.destroy())
  await writer.synced()
  const rand = seeded(7)
  const next = (n: number) => Math.floor(rand() * n)
  for (let i = 0; i < 300; i++) {
    const len = writer.text.length
    if (i % 5 === 4 && len > 10) writer.text.delete(next(len - 5), 1 + next(4))
    else writer.text.insert(next(len + 1), String.fromCharCode(97 + (i % 26)).repeat(1 + next(i % 50 === 0 ? 3000 : 40)))
  }
  await until('the edge acked every edit', async () => (await materializedText(core.url, 'packed-edits', tok)) === writer.text.toString())
  const reader = yclient(edge.url, 'packed-edits', tok)
  t.teardown(() => reader.destroy())
  await reader.synced()
  t.equal(reader.text.toString(), writer.text.toString())
})

t.test('edge - clients joining a document empty share one encode of it', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const writer = yclient(edgeA.url, 'many-joiners', tok)
  t.teardown(() => writer.destroy())
  await writer.synced()
  writer.text.insert(0, 'x'.repeat(10_000))
  const reader = yclient(edgeA.url, 'many-joiners', tok)
  t.teardown(() => reader.destroy())
  await until('the edit is in the room (acked, seen by a reader)', () => reader.text.length === 10_000)
  // One more acked edit drops any shared encode made so far (the reader may have joined after the first).
  writer.text.insert(0, 'y')
  await until('the reader sees the second edit', () => reader.text.length === 10_001)

  const before = await counterValue(edgeA.edge.metrics.fullStateEncodes)
  const joiners = Array.from({ length: 6 }, () => yclient(edgeA.url, 'many-joiners', tok))
  t.teardown(() => joiners.forEach((c) => c.destroy()))
  await until('every joiner has the document', () => joiners.every((c) => c.text.length === 10_001))
  t.equal((await counterValue(edgeA.edge.metrics.fullStateEncodes)) - before, 1, 'six joiners, one encode of the document')
})

t.test('edge - a room opened on a stored document gives joiners core state as it came; only an edit builds its probe', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const writer = yclient(edgeA.url, 'stored-open', tok)
  await writer.synced()
  writer.text.insert(0, 'x'.repeat(5_000))
  await until('core has the text', async () => (await materializedText(core.url, 'stored-open', tok))?.length === 5_000)
  writer.destroy()
  await until('the room closed with its last client', async () => (await edgeA.edge.metrics.rooms.get()).values[0]?.value === 0)

  const encodes = await counterValue(edgeA.edge.metrics.fullStateEncodes)
  const builds = await counterValue(edgeA.edge.metrics.probeBuilds)
  const readers = Array.from({ length: 3 }, () => yclient(edgeA.url, 'stored-open', tok))
  t.teardown(() => readers.forEach((c) => c.destroy()))
  await until('every reader has the document', () => readers.every((c) => c.text.length === 5_000))
  t.equal((await counterValue(edgeA.edge.metrics.fullStateEncodes)) - encodes, 0, 'joiners got the loaded state, not an encode of it')
  t.equal((await counterValue(edgeA.edge.metrics.probeBuilds)) - builds, 0, 'readers alone build no probe')
  readers[0]!.text.insert(0, 'y')
  await until('the edit reaches the other readers', () => readers.every((c) => c.text.length === 5_001))
  t.equal((await counterValue(edgeA.edge.metrics.probeBuilds)) - builds, 1, 'the first edit built the probe once')

  // Cold again: the joiner's answer goes out before the edge applies the load (its greeting waits for that).
  readers.forEach((c) => c.destroy())
  await until('the room closed with its last client', async () => (await edgeA.edge.metrics.rooms.get()).values[0]?.value === 0)
  const joiner = await RawSocket.open(edgeA.url, 'stored-open', tok)
  t.teardown(() => joiner.close())
  t.equal(joiner.mirror.getText('t').length, 5_001, 'the joiner has the document')
  t.same(joiner.received.slice(0, 2), ['sync-step2', 'sync-step1'], 'the loaded state first, then the greeting')
})
