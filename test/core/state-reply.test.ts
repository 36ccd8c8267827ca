import t from 'tap'
import * as Y from 'yjs'
import { jetstream } from '@nats-io/jetstream'
import { ServiceSubjects } from '../../contracts/mod.ts'
import { requestState } from '../../runtime/state-transfer.ts'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until } from '../helpers/client.ts'
import { publishEdit } from '../helpers/edits.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()

t.test('core - a document larger than max_payload is served whole over NATS and by the read API; core stays up', async (t) => {
  const nc = await stack.connect()
  const maxPayload = nc.info!.max_payload
  const js = jetstream(nc)
  const writer = new Y.Doc()
  const text = writer.getText('t')
  const PART = 1024 ** 2 // each update well under max_payload
  for (let i = 0; text.length <= maxPayload * 1.5; i++) {
    const before = Y.encodeStateVector(writer)
    text.insert(text.length, String(i % 10).repeat(PART))
    await publishEdit(js, 'acme', 'big', Y.encodeStateAsUpdate(writer, before))
  }
  const expected = text.toString()
  t.ok(Y.encodeStateAsUpdate(writer).byteLength > maxPayload, `state ${Y.encodeStateAsUpdate(writer).byteLength} B exceeds max_payload ${maxPayload} B`)
  const tok = await token({ tenant: 'acme' })
  await until('materialized', async () => (await materializedText(core.url, 'big', tok))?.length === expected.length, 60_000)
  // Compared as booleans: on a failure tap would print a diff of megabytes.
  t.ok((await materializedText(core.url, 'big', tok)) === expected, 'the read API returns the whole document')

  // The state service answers in parts of STATE_PART_BYTES; one message could not hold it.
  const reply = await requestState(nc, ServiceSubjects.coreState, { tenant: 'acme', docId: 'big' }, 10_000)
  t.equal(reply?.status, 'found')
  const got = new Y.Doc()
  if (reply?.status === 'found') Y.applyUpdate(got, reply.update)
  t.ok(got.getText('t').toString() === expected, 'requestState reassembles the whole document')
  t.equal((await fetch(`${core.url}/healthz`)).status, 200, 'core is still up')
  const again = await requestState(nc, ServiceSubjects.coreState, { tenant: 'acme', docId: 'big' }, 10_000)
  t.equal(again?.status, 'found', 'and keeps answering')
})
