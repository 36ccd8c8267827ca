import t from 'tap'
import * as Y from 'yjs'
import { jetstream } from '@nats-io/jetstream'
import { ServiceSubjects } from '../../contracts/mod.ts'
import { requestState } from '../../runtime/state-transfer.ts'
import { publishEdit } from '../helpers/edits.ts'
import { setup, token } from '../helpers/setup.ts'
import { until, yclient } from '../helpers/client.ts'
import { RawSocket } from '../helpers/raw-socket.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const DOC = 'cold-tail'

const textOf = (...updates: Uint8Array[]) => {
  const doc = new Y.Doc()
  for (const u of updates) Y.applyUpdate(doc, u)
  return doc.getText('t').toString()
}

t.test('core - a cold load gets the stored state as it is and the op-log tail apart; clients opening the document are synced with all of it', async (t) => {
  const first = await stack.core({ compactEveryOps: 5 })
  const js = jetstream(await stack.connect())
  // One writer typing on: the tail's items continue the state's (their origins are in it), and
  // its last update deletes a character of the state, so the tail cannot apply without it.
  const writer = new Y.Doc()
  writer.clientID = 42
  const text = writer.getText('t')
  let edits = 0
  const typed = async (change: () => void) => {
    const sv = Y.encodeStateVector(writer)
    change()
    await publishEdit(js, 'acme', DOC, Y.encodeStateAsUpdate(writer, sv))
    // One commit each: a batch holding them all would compact them all.
    const n = ++edits
    await until(`edit ${n} committed`, async () => (await stack.db.query('SELECT count(*)::int AS n FROM op_log WHERE doc_id = $1', [DOC])).rows[0].n === n)
  }
  for (let i = 0; i < 8; i++) await typed(() => text.insert(text.length, String(i)))
  await typed(() => text.delete(0, 1))
  const expected = text.toString()
  // A new core holds nothing in memory: its answers come from PostgreSQL.
  await first.stop()
  await stack.core({ compactEveryOps: 5 })
  const { state, tail } = (await stack.db.query<{ state: Buffer; tail: number }>('SELECT d.state, (SELECT count(*)::int FROM op_log o WHERE o.doc_id = d.doc_id AND o.id > d.through_op_id) AS tail FROM docs d WHERE d.doc_id = $1', [DOC])).rows[0]!
  t.equal(tail, 3, 'stored: a compacted state and a tail of 3 op-log rows')

  const nc = await stack.connect()
  const apart = await requestState(nc, ServiceSubjects.coreState, { tenant: 'acme', docId: DOC, stateVector: new Uint8Array([0]), acceptsTail: true }, 5_000)
  if (apart?.status !== 'found' || !apart.tail) return t.fail(`no tail apart: ${JSON.stringify(apart)}`)
  t.same(Buffer.from(apart.update), state, 'an asker that accepts a tail gets the stored state byte for byte')
  t.equal(textOf(apart.update, apart.tail), expected, 'and the tail that completes it')
  const merged = await requestState(nc, ServiceSubjects.coreState, { tenant: 'acme', docId: DOC, stateVector: new Uint8Array([0]) }, 5_000)
  if (merged?.status !== 'found') return t.fail(`no state: ${JSON.stringify(merged)}`)
  t.equal(merged.tail, undefined, 'one that does not gets one update')
  t.equal(textOf(merged.update), expected, 'holding all of it')

  const edge = await stack.edge()
  const tok = await token({ tenant: 'acme' })
  const raw = await RawSocket.open(edge.url, DOC, tok)
  t.teardown(() => raw.close())
  t.same(raw.received.slice(0, 2), ['update', 'sync-step2'], 'the edge sends a joiner the tail first, then the state as its sync step 2')
  t.equal(raw.mirror.getText('t').toString(), expected, 'which makes the whole document once the step 2 applies')
  t.same(raw.mirrorErrors, [])
  const client = yclient(edge.url, DOC, tok)
  t.teardown(() => client.destroy())
  const atSync = await new Promise<string>((resolve) => client.provider.on('sync', (s: boolean) => s && resolve(client.text.toString())))
  t.equal(atSync, expected, 'a stock client is synced with the whole document')
  // The edge's own doc holds state and tail too: an edit of the client reaches the other socket whole.
  client.text.insert(0, '>')
  await until('the raw socket sees the edit', () => raw.mirror.getText('t').toString() === `>${expected}`)
})
