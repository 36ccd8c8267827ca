// A client whose old socket is still open on the edge (half-open TCP: a network switch)
// reconnects to the same edge and types. Its edits are dropped as 'foreign-client' while the old
// socket lingers (its client id is that socket's), and once the old socket closes they wait on
// what was dropped: the edge asks the client to resync again until its answer gets through
// (edge/room-ingest.ts askResync).
import t from 'tap'
import net from 'node:net'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()
const edge = await stack.edge()
const edgePort = Number(new URL(edge.url).port)

/** A TCP proxy in front of the edge; `cutClientSide` drops the client's leg only (the edge keeps its socket: half-open). */
const legs: { down: net.Socket; up: net.Socket }[] = []
const proxy = net.createServer((down) => {
  const up = net.connect(edgePort, '127.0.0.1')
  down.pipe(up)
  up.pipe(down)
  const leg = { down, up }
  legs.push(leg)
  down.on('error', () => {})
  up.on('error', () => {})
})
await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r))
t.teardown(() => proxy.close())
const proxyUrl = `ws://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`

t.test('edge - a client that reconnects while its old socket lingers gets every edit through once the old socket goes', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const writer = yclient(proxyUrl, 'stale-owner', tok)
  const reader = yclient(edge.url, 'stale-owner', tok)
  t.teardown(() => (writer.destroy(), reader.destroy()))
  await Promise.all([writer.synced(), reader.synced()])
  writer.text.insert(0, 'hello')
  await until('reader sees hello', () => reader.text.toString() === 'hello')

  // Network switch: the client's leg dies; the edge does not notice (no FIN reaches it).
  const old = legs[0]!
  old.down.unpipe(old.up)
  old.up.unpipe(old.down)
  old.down.destroy()
  await until('writer reconnected through a new leg', () => legs.length === 2 && writer.provider.wsconnected && writer.provider.synced, 10_000)
  writer.text.insert(5, ' world')
  await new Promise((r) => setTimeout(r, 1_000))
  // The edge finally notices the old socket is gone (idle timeout in production: up to ~2 min).
  old.up.destroy()
  await new Promise((r) => setTimeout(r, 500))
  for (const s of ['!', '!', '!']) {
    writer.text.insert(writer.text.length, s)
    await new Promise((r) => setTimeout(r, 300))
  }
  const want = 'hello world!!!'
  t.equal(writer.text.toString(), want, 'the writer shows its text')
  await until('the reader gets every edit of the still-connected writer', () => reader.text.toString() === want, 8_000)
  await until('and core commits them', async () => (await materializedText(core.url, 'stale-owner', tok)) === want)
})
