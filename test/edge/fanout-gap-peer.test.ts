// A fan-out lost on the way while core cannot give it (down, or behind the stream): the room that
// noticed the gap asks the peer rooms too, and the one that fanned it holds it (edge/room.ts).
import t from 'tap'
import * as Y from 'yjs'
import { FanKind, ServiceSubjects, ServiceUser, encodeFan } from '../../contracts/mod.ts'
import { UpdatePublisher } from '../../edge/publisher.ts'
import { createEdgeMetrics } from '../../edge/metrics.ts'
import { createRegistry } from '../../runtime/metrics.ts'
import { createLogger } from '../../runtime/log.ts'
import { requestState, respondState } from '../../runtime/state-transfer.ts'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const edge = await stack.edge()

t.test('edge - a missed fan-out core cannot give yet is fetched from the room on the edge that fanned it', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const core = await stack.core()
  const b = yclient(edge.url, 'peer-gap', tok)
  t.teardown(() => b.destroy())
  await b.synced()
  b.text.insert(0, 'hello')
  await until('materialized', async () => (await materializedText(core.url, 'peer-gap', tok)) === 'hello')
  await new Promise((r) => setTimeout(r, 1_500)) // past the room's resync after opening
  await core.stop()

  // A room on another edge, as the edge runs one: publishes durably, fans out, answers peers' state requests.
  const nc = await stack.connect()
  const publisher = new UpdatePublisher(nc, 'phantom-edge', createEdgeMetrics(createRegistry('phantom', false)), createLogger('phantom', 'silent'), { ackTimeoutMs: 2_000, attempts: 3 })
  const phantom = new Y.Doc()
  Y.applyUpdate(phantom, Y.encodeStateAsUpdate(b.doc))
  nc.subscribe(ServiceSubjects.room('acme', 'peer-gap'), {
    callback: (err, msg) => {
      if (!err) respondState(msg, { status: 'found', update: Y.encodeStateAsUpdate(phantom) })
    },
  })
  const updates: Uint8Array[] = []
  phantom.on('update', (u: Uint8Array) => updates.push(u))
  phantom.getText('t').insert(5, ' A')
  phantom.getText('t').insert(7, ' LOST')
  phantom.getText('t').insert(12, ' and more')
  for (const u of updates) await publisher.publish('acme', 'peer-gap', 'phantom', u)
  const fan = (seq: number) => nc.publish(ServiceSubjects.fan('acme', 'peer-gap'), encodeFan({ kind: FanKind.Update, edgeId: 'phantom-edge', stream: 'phantom-edge/1', seq, payload: updates[seq - 1]! }))
  fan(1)
  fan(3) // seq 2 is lost on the way
  const expected = 'hello A LOST and more'
  t.equal(phantom.getText('t').toString(), expected)
  await until('the client on the other edge has the lost edit, with core down', () => b.text.toString() === expected, 5_000)

  const back = await stack.core()
  t.teardown(() => back.stop())
  await until('core, back, materialized the same', async () => (await materializedText(back.url, 'peer-gap', tok)) === expected, 20_000)
})

t.test('edge - a room answers a peer room with what the asker lacks, by the state vector it sends, not the whole document each time', async (t) => {
  const core = await stack.core()
  t.teardown(() => core.stop())
  const tok = await token({ tenant: 'acme' })
  const writer = yclient(edge.url, 'peer-diff', tok)
  t.teardown(() => writer.destroy())
  await writer.synced()
  writer.text.insert(0, 'x'.repeat(20_000))
  const nc = await stack.connect(ServiceUser.Edge)
  const ask = async (stateVector: Uint8Array) => {
    const reply = await requestState(nc, ServiceSubjects.room('acme', 'peer-diff'), { tenant: 'acme', docId: 'peer-diff', stateVector }, 5_000)
    if (reply?.status !== 'found') throw new Error(`the room answered ${JSON.stringify(reply)}`)
    return reply.update
  }
  await until('the room holds the text', async () => (await ask(new Uint8Array([0]))).byteLength > 20_000)
  const lacking = Y.encodeStateVector(writer.doc)
  writer.text.insert(0, 'new ')
  await until('the room holds the new edit', async () => Y.diffUpdate(await ask(new Uint8Array([0])), lacking).byteLength < 100)
  const answer = await ask(lacking)
  t.ok(answer.byteLength < 100, `an asker holding all but the last edit gets ${answer.byteLength} bytes`)
  t.ok((await ask(new Uint8Array([0]))).byteLength > 20_000, 'an asker holding nothing gets the whole document')
})
