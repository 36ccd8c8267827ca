import t from 'tap'
import { CloseCode } from '../../contracts/mod.ts'
import { setup, token } from '../helpers/setup.ts'
import { until, yclient, type TestClient } from '../helpers/client.ts'
import { RawSocket, awarenessUpdate, frames } from '../helpers/raw-socket.ts'
import { counterValue } from '../helpers/metric-value.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
await stack.core()
const edgeA = await stack.edge()
const edgeB = await stack.edge()

const presence = (viewer: TestClient, of: TestClient) => viewer.provider.awareness.getStates().get(of.doc.clientID) as { user?: string } | undefined

t.test('edge - a presence frame above the size limit closes only its sender with 4413', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const other = yclient(edgeA.url, 'presence-size', tok)
  t.teardown(() => other.destroy())
  await other.synced()
  let otherClosed = false
  other.provider.on('connection-close', () => (otherClosed = true))
  const raw = await RawSocket.open(edgeA.url, 'presence-size', tok)
  raw.send(frames.awareness(awarenessUpdate([{ clientId: 77, clock: 1, state: { blob: 'x'.repeat(64 * 1024) } }])))
  const outcome = await raw.ping()
  t.equal(outcome === 'alive' ? 'alive' : outcome.code, CloseCode.MessageTooBig, 'sender closed with 4413')
  t.equal(await counterValue(edgeA.edge.metrics.tooBigRejections), 1, 'counted')
  const small = await RawSocket.open(edgeA.url, 'presence-size', tok)
  small.send(frames.awareness(awarenessUpdate([{ clientId: 78, clock: 1, state: { user: 'small' } }])))
  await until('a small presence state still goes through', () => (other.provider.awareness.getStates().get(78) as { user?: string } | undefined)?.user === 'small')
  t.notOk(otherClosed, 'the other client stayed connected')
  small.close()
})

t.test('edge - a presence state nested too deep closes only its sender with 4400, and the room goes on', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const watcher = yclient(edgeA.url, 'presence-deep', tok)
  t.teardown(() => watcher.destroy())
  await watcher.synced()
  const raw = await RawSocket.open(edgeA.url, 'presence-deep', tok)
  // ~10 KB, under the size limit; re-encoding it (JSON.stringify recurses) overflows the stack.
  const depth = 5_000
  raw.send(frames.awareness(awarenessUpdate([{ clientId: 81, clock: 1, json: '['.repeat(depth) + ']'.repeat(depth) }])))
  const outcome = await raw.ping()
  t.equal(outcome === 'alive' ? 'alive' : outcome.code, CloseCode.BadRequest, 'sender closed with 4400')
  const next = await RawSocket.open(edgeA.url, 'presence-deep', tok)
  next.send(frames.awareness(awarenessUpdate([{ clientId: 82, clock: 1, state: { user: 'after', nested: [[[{ ok: true }]]] } }])))
  await until('presence after it still goes out', () => (watcher.provider.awareness.getStates().get(82) as { user?: string } | undefined)?.user === 'after')
  t.notOk(watcher.provider.awareness.getStates().has(81), 'the deep state never reached anyone')
  next.close()
})

t.test('edge - a socket introduces at most 4 presence client ids; entries for more are refused and counted', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const watcher = yclient(edgeA.url, 'presence-ids', tok)
  t.teardown(() => watcher.destroy())
  await watcher.synced()
  const raw = await RawSocket.open(edgeA.url, 'presence-ids', tok)
  const before = await counterValue(edgeA.edge.metrics.awarenessRefused, { reason: 'ids-per-socket' })
  const ids = Array.from({ length: 10 }, (_, i) => 300 + i)
  raw.send(frames.awareness(awarenessUpdate(ids.map((clientId) => ({ clientId, clock: 1, state: { id: clientId } })))))
  raw.send(frames.awareness(awarenessUpdate([{ clientId: 300, clock: 2, state: { id: 300, moved: true } }])))
  await until('its own ids update', () => (watcher.provider.awareness.getStates().get(300) as { moved?: boolean } | undefined)?.moved === true)
  t.same(ids.filter((id) => watcher.provider.awareness.getStates().has(id)), ids.slice(0, 4), 'the first 4 ids are its own, the rest never applied')
  t.equal((await counterValue(edgeA.edge.metrics.awarenessRefused, { reason: 'ids-per-socket' })) - before, 6, 'the refused entries are counted')
  raw.close()
})

t.test('edge - presence frames over the per-socket rate are dropped and counted', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const watcher = yclient(edgeB.url, 'presence-rate', tok)
  t.teardown(() => watcher.destroy())
  await watcher.synced()
  const raw = await RawSocket.open(edgeB.url, 'presence-rate', tok)
  // Defaults: a burst of 60, then 30 per second. On a loaded box the frames reach the edge over
  // a while, so what may pass is bounded by the time they took, not by the burst alone.
  const started = performance.now()
  for (let clock = 1; clock <= 300; clock++) raw.send(frames.awareness(awarenessUpdate([{ clientId: 91, clock, state: { n: clock } }])))
  t.equal(await raw.ping(), 'alive', 'over-rate frames do not close the socket')
  const elapsedS = (performance.now() - started) / 1000
  const dropped = await counterValue(edgeB.edge.metrics.awarenessRefused, { reason: 'rate' })
  const allowed = 60 + Math.ceil(30 * elapsedS) + 1
  t.ok(dropped > 0 && 300 - dropped <= allowed, `frames past the rate were dropped and counted (${300 - dropped} passed in ${elapsedS.toFixed(2)} s, at most ${allowed} allowed)`)
  await until('the burst reached the watcher', () => ((watcher.provider.awareness.getStates().get(91) as { n?: number } | undefined)?.n ?? 0) >= 60)
  raw.close()
})

t.test('edge - a socket cannot overwrite or remove presence it did not introduce, on its edge or from a peer edge', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const alice = yclient(edgeA.url, 'presence-owner', tok)
  const bob = yclient(edgeB.url, 'presence-owner', tok)
  t.teardown(() => (alice.destroy(), bob.destroy()))
  await Promise.all([alice.synced(), bob.synced()])
  alice.provider.awareness.setLocalState({ user: 'alice' })
  await until('bob sees alice', () => presence(bob, alice)?.user === 'alice')
  const refusedBefore = (await counterValue(edgeA.edge.metrics.awarenessRefused, { reason: 'not-owner' })) + (await counterValue(edgeB.edge.metrics.awarenessRefused, { reason: 'not-owner' }))

  for (const [edgeUrl, name, ownId] of [
    [edgeA.url, 'same edge', 4_000_001],
    [edgeB.url, 'peer edge', 4_000_002],
  ] as const) {
    const mallory = await RawSocket.open(edgeUrl, 'presence-owner', tok)
    // Overwrite and remove alice's state; in the same frame, set our own (the proof it was handled).
    mallory.send(frames.awareness(awarenessUpdate([{ clientId: alice.doc.clientID, clock: 10_000, state: { user: 'mallory' } }, { clientId: ownId, clock: 1, state: { user: `mallory via ${name}` } }])))
    mallory.send(frames.awareness(awarenessUpdate([{ clientId: alice.doc.clientID, clock: 10_001, state: null }, { clientId: ownId, clock: 2, state: { user: `mallory again via ${name}` } }])))
    for (const viewer of [alice, bob]) await until(`${name}: mallory's own presence arrives`, () => (viewer.provider.awareness.getStates().get(ownId) as { user?: string } | undefined)?.user === `mallory again via ${name}`)
    t.equal(presence(bob, alice)?.user, 'alice', `${name}: alice's presence unchanged for bob`)
    t.equal(presence(alice, alice)?.user, 'alice', `${name}: and for alice`)
    mallory.close()
    await until(`${name}: mallory's presence removed when it leaves`, () => !bob.provider.awareness.getStates().has(ownId))
  }
  const refused = (await counterValue(edgeA.edge.metrics.awarenessRefused, { reason: 'not-owner' })) + (await counterValue(edgeB.edge.metrics.awarenessRefused, { reason: 'not-owner' }))
  t.ok(refused - refusedBefore >= 4, 'each refused entry is counted')
  t.equal(presence(bob, alice)?.user, 'alice', 'alice is still present after mallory left')
})

t.test("edge - while a client reconnects, another user's socket cannot take over its presence id and relayed removals claim nothing; the client's own user can", async (t) => {
  const victim = await token({ tenant: 'acme', sub: 'victim' })
  const mallory = await RawSocket.open(edgeA.url, 'presence-takeover', await token({ tenant: 'acme', sub: 'mallory', role: 'viewer' }))
  t.teardown(() => mallory.close())
  const v = yclient(edgeA.url, 'presence-takeover', victim)
  const o = yclient(edgeA.url, 'presence-takeover', await token({ tenant: 'acme', sub: 'observer' })) // relays every presence change it hears, as stock clients do
  const tab = yclient(edgeA.url, 'presence-takeover', victim) // the victim's other tab relays them too
  t.teardown(() => (v.destroy(), o.destroy(), tab.destroy()))
  await Promise.all([v.synced(), o.synced(), tab.synced()])
  v.provider.awareness.setLocalState({ user: 'victim' })
  await until('o sees the victim', () => presence(o, v)?.user === 'victim')
  v.provider.disconnect() // a network blip: the stock client reconnects with the same id
  await until('the victim is gone for o', () => presence(o, v) === undefined)
  const refusedBefore = await counterValue(edgeA.edge.metrics.awarenessRefused, { reason: 'not-owner' })
  mallory.send(frames.awareness(awarenessUpdate([{ clientId: v.doc.clientID, clock: 1_000_000, state: { user: 'mallory as victim' } }])))
  await until('refused', async () => (await counterValue(edgeA.edge.metrics.awarenessRefused, { reason: 'not-owner' })) === refusedBefore + 1)
  v.provider.connect()
  await v.synced()
  // Twice: the room removed the state at the clock after the last it had, so the next one ties with it.
  v.provider.awareness.setLocalState({ user: 'victim back' })
  v.provider.awareness.setLocalState({ user: 'victim again' })
  await until("o sees the victim's own presence", () => presence(o, v)?.user === 'victim again')
})

t.test("edge - while a client reconnects, another user's socket on a peer edge cannot take over its presence id either", async (t) => {
  const victim = await token({ tenant: 'acme', sub: 'victim' })
  const v = yclient(edgeA.url, 'presence-takeover-peer', victim)
  const o = yclient(edgeB.url, 'presence-takeover-peer', await token({ tenant: 'acme', sub: 'observer' }))
  t.teardown(() => (v.destroy(), o.destroy()))
  await Promise.all([v.synced(), o.synced()])
  const mallory = await RawSocket.open(edgeB.url, 'presence-takeover-peer', await token({ tenant: 'acme', sub: 'mallory', role: 'viewer' }))
  t.teardown(() => mallory.close())
  v.provider.awareness.setLocalState({ user: 'victim' })
  await until('o (edge B) sees the victim', () => presence(o, v)?.user === 'victim')
  v.provider.disconnect()
  await until('the victim is gone for o', () => presence(o, v) === undefined)
  const refusedBefore = await counterValue(edgeB.edge.metrics.awarenessRefused, { reason: 'not-owner' })
  mallory.send(frames.awareness(awarenessUpdate([{ clientId: v.doc.clientID, clock: 1_000_000, state: { user: 'mallory as victim' } }])))
  await until('refused on edge B', async () => (await counterValue(edgeB.edge.metrics.awarenessRefused, { reason: 'not-owner' })) > refusedBefore)
  v.provider.connect()
  await v.synced()
  v.provider.awareness.setLocalState({ user: 'victim back' })
  v.provider.awareness.setLocalState({ user: 'victim again' })
  await until("o sees the victim's own presence", () => presence(o, v)?.user === 'victim again')
})

t.test('edge - an edge killed with -9: the other edges drop its clients presence within seconds', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const doomed = await stack.process('edge')
  const gone = yclient(doomed.url, 'presence-edge-death', tok)
  const stays = yclient(edgeB.url, 'presence-edge-death', tok)
  const watcher = yclient(edgeA.url, 'presence-edge-death', tok)
  t.teardown(() => [gone, stays, watcher].forEach((c) => c.destroy()))
  await Promise.all([gone.synced(), stays.synced(), watcher.synced()])
  gone.provider.awareness.setLocalStateField('user', 'on the doomed edge')
  stays.provider.awareness.setLocalStateField('user', 'on a live edge')
  await until('the watcher sees both', () => presence(watcher, gone)?.user === 'on the doomed edge' && presence(watcher, stays)?.user === 'on a live edge')
  // Its socket is not closed first (that would remove its presence on the way): only the edge's death can.
  await doomed.kill9()
  const killedAt = Date.now()
  await until('the dead edge client presence is gone', () => presence(watcher, gone) === undefined, 10_000)
  const ms = Date.now() - killedAt
  t.ok(ms < 10_000, `removed ${ms} ms after the kill (y-protocols alone: 30 s)`)
  t.equal(presence(watcher, stays)?.user, 'on a live edge', 'the live edge client stays')
})

t.test('edge - presence changes gather into one frame per subscriber per interval, not one per change', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const watcher = await RawSocket.open(edgeA.url, 'presence-merge', tok)
  const writers = await Promise.all(Array.from({ length: 5 }, () => RawSocket.open(edgeA.url, 'presence-merge', tok)))
  t.teardown(() => [watcher, ...writers].forEach((s) => s.close()))
  const [framesBefore, entriesBefore] = [watcher.awarenessFrames, watcher.awarenessEntries]
  writers.forEach((w, i) => w.send(frames.awareness(awarenessUpdate([{ clientId: 900 + i, clock: 1, state: { user: `writer ${i}` } }]))))
  await until('the watcher got all five presence states', () => watcher.awarenessEntries - entriesBefore >= 5)
  const received = watcher.awarenessFrames - framesBefore
  t.ok(received <= 2, `5 presence changes reached the watcher in ${received} frame(s)`)
})

t.test('edge - the last client leaving a room: its presence removal still reaches the other edges', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const leaving = yclient(edgeA.url, 'presence-leave', tok)
  const watcher = yclient(edgeB.url, 'presence-leave', tok)
  t.teardown(() => [leaving, watcher].forEach((c) => c.destroy()))
  await Promise.all([leaving.synced(), watcher.synced()])
  leaving.provider.awareness.setLocalStateField('user', 'leaving soon')
  await until('the watcher sees it', () => presence(watcher, leaving)?.user === 'leaving soon')
  const id = leaving.doc.clientID
  leaving.destroy() // the only client of its room on edge A: the room closes with it
  await until('its presence is removed on the other edge', () => !watcher.provider.awareness.getStates().has(id), 5_000)
  t.pass('removed')
})

t.test('edge - a client joining on another edge sees the presence already there at once, not when each renews it (15 s)', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const alice = yclient(edgeA.url, 'presence-join', tok)
  t.teardown(() => alice.destroy())
  await alice.synced()
  alice.provider.awareness.setLocalState({ user: 'alice' })
  const sameEdge = yclient(edgeA.url, 'presence-join', tok)
  t.teardown(() => sameEdge.destroy())
  await until('a joiner on the same edge sees alice', () => presence(sameEdge, alice)?.user === 'alice', 2_000)
  await new Promise((r) => setTimeout(r, 4_000)) // long past alice's last change and its fan-out
  const bob = yclient(edgeB.url, 'presence-join', tok)
  t.teardown(() => bob.destroy())
  await bob.synced()
  await until('bob, on the other edge, sees alice', () => presence(bob, alice)?.user === 'alice', 3_000)
})
