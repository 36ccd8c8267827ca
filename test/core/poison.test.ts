import t from 'tap'
import { readDocState } from '../../core/store.ts'
import * as Y from 'yjs'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { DLQ_STREAM, ServiceUser, deadLetterSubject, decodeDeadLetterEvent, decodeEnvelope } from '../../contracts/mod.ts'
import { edit, publishEdit } from '../helpers/edits.ts'
import { setup } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'
import { partitionsOf } from '../helpers/partitions.ts'
import { decodes, mutateUntil, richEdit, seeded, trial } from '../helpers/mutants.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
await stack.core()
const js = jetstream(await stack.connect())
const jsm = await jetstreamManager(await stack.connect(ServiceUser.Admin))

const docFrom = (...updates: Uint8Array[]) => {
  const doc = new Y.Doc()
  for (const u of updates) Y.applyUpdate(doc, u)
  return doc
}

/** An update from `clientID` on top of `base`, made by `change`. */
function editOn(base: Uint8Array, clientID: number, change: (text: Y.Text) => void): Uint8Array {
  const doc = docFrom(base)
  doc.clientID = clientID
  const before = Y.encodeStateVector(doc)
  change(doc.getText('t'))
  return Y.encodeStateAsUpdate(doc, before)
}

/**
 * A valid rich edit on top of `base` with one to three bytes changed (seeded, so always the same)
 * such that Y.decodeUpdate accepts it and Y.applyUpdate throws on a doc holding `base`. Every such
 * mutant found (none in 800K others) has an item naming as its neighbour or parent a clock its
 * own client has not made (runtime/yjs-items.ts): core refuses it as malformed before applying it.
 */
function poisonedUpdate(base: Uint8Array): Uint8Array {
  // Nested types and formatting: mutants of a plain text edit that throw are rare.
  const doc = docFrom(base)
  doc.clientID = 2
  const before = Y.encodeStateVector(doc)
  richEdit(doc)
  const valid = Y.encodeStateAsUpdate(doc, before)
  const committed = Y.encodeStateAsUpdate(docFrom(base))
  return mutateUntil(valid, (m) => decodes(m) && trial([base], m) === 'throws' && trial([committed], m) === 'throws', seeded(42))
}

const opRows = async (docIds: string[]) => (await stack.db.query('SELECT count(*)::int AS n FROM op_log WHERE doc_id = ANY($1)', [docIds])).rows[0].n as number

t.test('core - an update Yjs cannot apply is dead-lettered, never applied, and the partition moves on', async (t) => {
  const base = edit('hello poisoned world', 1)
  const poison = poisonedUpdate(base)
  // Find docs that share the poisoned doc's partition (nats-server hashes doc ids to partitions).
  const candidates = Array.from({ length: 48 }, (_, i) => `neighbour-${i}`)
  await publishEdit(js, 'acme', 'poisoned', base)
  for (const [i, doc] of candidates.entries()) await publishEdit(js, 'acme', doc, edit(`first ${i}`, 100 + i))
  await until('base edits committed', async () => (await opRows(['poisoned', ...candidates])) === 1 + candidates.length)
  const partitions = await partitionsOf(stack.db, jsm, 'acme', ['poisoned', ...candidates])
  const neighbours = candidates.filter((doc) => partitions.get(doc) === partitions.get('poisoned'))
  t.ok(neighbours.length > 0, `docs in the poisoned doc's partition: ${neighbours.join(', ')}`)

  // A good update to the doc in the same batch before the poison, then the poison, then more.
  const before = editOn(base, 3, (text) => text.insert(0, '>> '))
  const after = [editOn(base, 4, (text) => text.insert(text.length, ' <<')), editOn(base, 5, (text) => text.insert(6, '~'))]
  await publishEdit(js, 'acme', 'poisoned', before)
  await publishEdit(js, 'acme', 'poisoned', poison)
  for (const update of after) await publishEdit(js, 'acme', 'poisoned', update)
  for (const [i, doc] of neighbours.entries()) await publishEdit(js, 'acme', doc, edit(`after ${i}`, 300 + i))

  await until('good updates after the poison committed', async () => (await opRows(['poisoned'])) === 4 && (await opRows(neighbours)) === 2 * neighbours.length, 20_000)
  const dead = (await stack.db.query("SELECT reason, payload FROM dead_letters WHERE doc_id = 'poisoned'")).rows
  t.equal(dead.length, 1, 'the poison is dead-lettered once')
  t.match(dead[0].reason, /^malformed-item: .*not made before it/, 'as malformed: it names a clock its client has not made')
  t.same(Buffer.from(decodeEnvelope(dead[0].payload).update), Buffer.from(poison), 'and its bytes')
  await until('on the dead-letter stream too', async () => (await jsm.streams.info(DLQ_STREAM, { subjects_filter: deadLetterSubject('acme', 'malformed-item') })).state.messages === 1)
  const streamed = decodeDeadLetterEvent((await jsm.streams.getMessage(DLQ_STREAM, { last_by_subj: deadLetterSubject('acme', 'malformed-item') }))!.data)
  t.match(streamed, { reason: dead[0].reason, tenant: 'acme', docId: 'poisoned' }, 'with the same reason, tenant and doc')
  t.same(Buffer.from(decodeEnvelope(streamed.payload).update), Buffer.from(poison), 'and the original bytes')

  const reference = docFrom(base, before, ...after)
  const state = (await readDocState(stack.db, 'acme', 'poisoned'))!
  const materialized = docFrom(state)
  t.equal(materialized.getText('t').toString(), reference.getText('t').toString(), 'the doc holds the good updates only')
  t.same(Buffer.from(Y.encodeStateVector(materialized)), Buffer.from(Y.encodeStateVector(reference)), 'same state vector as the reference')
})
