import t from 'tap'
import * as Y from 'yjs'
import WebSocket from 'ws'
import * as decoding from 'lib0/decoding'
import { CloseCode, SAVED_MESSAGE_TYPE } from '../../contracts/mod.ts'
import { setup, token } from '../helpers/setup.ts'
import { until, yclient } from '../helpers/client.ts'
import { frames } from '../helpers/raw-socket.ts'

const stack = await setup({ tenants: { tiny: 128 * 1024 } })
t.teardown(() => stack.cleanup())
await stack.core()
const edge = await stack.edge()

t.test("clients - another writer's publish refused for quota does not stall a socket's saved count on frames the room held", async (t) => {
  const tok = await token({ tenant: 'tiny' })
  const writer = yclient(edge.url, 'held-stall', tok)
  t.teardown(() => writer.destroy())
  await writer.synced()
  const socket = new WebSocket(`${edge.url}/held-stall?token=${tok}&saved=1`)
  let savedCount = 0
  socket.on('message', (data: Buffer) => {
    const d = decoding.createDecoder(new Uint8Array(data))
    if (decoding.readVarUint(d) === SAVED_MESSAGE_TYPE) savedCount = decoding.readVarUint(d)
  })
  await new Promise((r) => socket.once('open', r))
  t.teardown(() => socket.close())
  let sent = 0
  const send = (frame: Uint8Array) => (socket.send(frame), sent++)
  // A client with nothing new answers each sync with an empty step 2: held by the room, settled once what it has in flight is stored.
  const empty = Y.encodeStateAsUpdate(new Y.Doc())
  let refused = false
  void writer.nextClose().then((c) => (refused = c.code === CloseCode.QuotaExceeded))
  for (let i = 0; i < 80 && !refused; i++) {
    writer.text.insert(writer.text.length, 'x'.repeat(4_096))
    send(frames.step2(empty))
    await new Promise((r) => setTimeout(r, 10))
  }
  t.ok(refused, 'the writer hit the quota and was closed with 4507')
  writer.destroy()
  await stack.provisioner.setQuota('tiny', 16 * 1024 ** 2)
  const mine = new Y.Doc()
  mine.getText('t').insert(0, 'y')
  send(frames.update(Y.encodeStateAsUpdate(mine)))
  await until(`the saved count reaches the ${sent} frames sent`, () => savedCount === sent, 20_000)
  t.equal(socket.readyState, WebSocket.OPEN, 'the socket stayed open')
})
