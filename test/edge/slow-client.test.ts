import t from 'tap'
import type { Socket } from 'node:net'
import { setup, token } from '../helpers/setup.ts'
import { until, yclient } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
await stack.core()
const edge = await stack.edge({ maxBufferedBytes: 256 * 1024 })

const slowCloses = async () => (await edge.edge.metrics.slowClients.get()).values.find((v) => v.labels.tenant === 'acme')?.value ?? 0

t.test('edge - a client that stops reading is closed with 4508 and resyncs the full text on reconnect', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const typist = yclient(edge.url, 'slow-reader', tok)
  const slow = yclient(edge.url, 'slow-reader', tok)
  t.teardown(() => (typist.destroy(), slow.destroy()))
  await Promise.all([typist.synced(), slow.synced()])
  typist.text.insert(0, 'start ')
  await until('the slow client saw the first edit', () => slow.text.toString() === 'start ')

  // The slow client's process stops reading its socket: kernel buffers fill, then the edge's.
  const socket = (slow.provider.ws as unknown as { _socket: Socket })._socket
  socket.pause()
  const closed = slow.nextClose()
  const block = 'x'.repeat(64 * 1024)
  let typed = 0
  while ((await slowCloses()) === 0) {
    if (typed > 64 * 1024 * 1024) throw new Error('typed 64 MiB and the slow client was never closed')
    // Insert and delete a block: many bytes on the wire, a small document.
    typist.text.insert(typist.text.length, block)
    typist.text.delete(typist.text.length - block.length, block.length)
    typed += block.length
    await new Promise((r) => setTimeout(r, 2))
  }
  t.pass(`the edge closed the slow client after ${Math.round(typed / 1024 / 1024)} MiB were typed`)
  const closes = (await edge.edge.metrics.closes.get()).values.find((v) => String(v.labels.code) === '4508')?.value ?? 0
  t.ok(closes >= 1, 'the close is counted under code 4508')
  typist.text.insert(typist.text.length, 'end')

  socket.resume()
  const { code } = await closed
  t.ok(code === 4508 || code === 1006, `the slow client sees its socket closed (${code}; 1006 when the edge gave up flushing the close frame)`)
  await until('the reconnected slow client holds the full text', () => slow.provider.synced && slow.text.toString() === 'start end', 30_000)
  t.equal(typist.text.toString(), 'start end')
})
