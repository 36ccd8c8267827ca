import t from 'tap'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { ServiceUser, editIngestSubject, editMsgId, encodeEnvelope } from '../../contracts/mod.ts'
import { readDocState } from '../../core/store.ts'
import { edit, publishEdit } from '../helpers/edits.ts'
import { setup } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'
import { partitionsOf } from '../helpers/partitions.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
await stack.core()
const js = jetstream(await stack.connect())
const jsm = await jetstreamManager(await stack.connect(ServiceUser.Admin))

const opRows = async (docIds: string[]) => (await stack.db.query('SELECT count(*)::int AS n FROM op_log WHERE doc_id = ANY($1)', [docIds])).rows[0].n as number

t.test('core - an update whose op-log row PostgreSQL refuses is dead-lettered; its partition and its batch go on', async (t) => {
  const candidates = Array.from({ length: 48 }, (_, i) => `neighbour-${i}`)
  await publishEdit(js, 'acme', 'refusing', edit('kept ', 1))
  for (const [i, doc] of candidates.entries()) await publishEdit(js, 'acme', doc, edit(`first ${i}`, 100 + i))
  await until('first edits committed', async () => (await opRows(['refusing', ...candidates])) === 1 + candidates.length)
  const partitions = await partitionsOf(stack.db, jsm, 'acme', ['refusing', ...candidates])
  const neighbours = candidates.filter((doc) => partitions.get(doc) === partitions.get('refusing'))
  t.ok(neighbours.length > 0, `docs in the refusing doc's partition: ${neighbours.join(', ')}`)

  // A rule PostgreSQL enforces that no check of core's knows of: rows of this user are refused.
  await stack.db.query("ALTER TABLE op_log ADD CONSTRAINT refuse_user CHECK (user_id <> 'refused-user') NOT VALID")
  const refusedUpdate = edit('never stored ', 2)
  const envelope = encodeEnvelope({ v: 1, tenant: 'acme', docId: 'refusing', userId: 'refused-user', update: refusedUpdate, ingestTs: Date.now(), edgeId: 'test' })
  const after = edit('after', 3)
  await Promise.all([
    js.publish(editIngestSubject('acme', 'refusing'), envelope, { msgID: editMsgId('acme', 'refusing', refusedUpdate) }),
    publishEdit(js, 'acme', 'refusing', after),
    ...neighbours.map((doc, i) => publishEdit(js, 'acme', doc, edit(`then ${i}`, 300 + i))),
  ])

  await until('the other updates committed', async () => (await opRows(['refusing'])) === 2 && (await opRows(neighbours)) === 2 * neighbours.length, 30_000)
  const dead = (await stack.db.query("SELECT reason, tenant, doc_id FROM dead_letters WHERE doc_id = 'refusing'")).rows
  t.equal(dead.length, 1, 'the refused update is dead-lettered once')
  t.match(dead[0], { reason: /^refused: .*refuse_user/, tenant: 'acme', doc_id: 'refusing' }, 'with PostgreSQL\'s reason')

  const state = (await readDocState(stack.db, 'acme', 'refusing'))!
  const doc = new Y.Doc()
  Y.applyUpdate(doc, state)
  t.notOk(doc.getText('t').toString().includes('never stored'), 'the refused edit is not in the state')
  t.ok(doc.getText('t').toString().includes('after'), 'the edit after it is')

  await publishEdit(js, 'acme', 'refusing', edit('later', 4))
  await until('a later update commits too', async () => (await opRows(['refusing'])) === 3, 20_000)
})

/** One (legacy) ContentJSON item holding `"\0x"`: Yjs throws a SyntaxError quoting the NUL while it decodes it. */
function jsonContentWithNul(client: number): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, 1) // clients
  encoding.writeVarUint(e, 1) // structs
  encoding.writeVarUint(e, client)
  encoding.writeVarUint(e, 0) // clock
  encoding.writeUint8(e, 2) // info: ContentJSON, no origins, no parentSub
  encoding.writeVarUint(e, 1) // the parent is a root type, by name
  encoding.writeVarString(e, 'arr')
  encoding.writeVarUint(e, 1) // one JSON value
  encoding.writeVarString(e, '\u0000x')
  encoding.writeVarUint(e, 0) // empty delete set
  return encoding.toUint8Array(e)
}

t.test('core - a dead letter whose reason quotes a NUL (PostgreSQL text holds none) is stored escaped; its partition goes on', async (t) => {
  const bad = jsonContentWithNul(77)
  t.throws(() => Y.applyUpdate(new Y.Doc(), bad), 'Yjs throws on it')
  await publishEdit(js, 'acme', 'nul-reason', edit('before', 1))
  await until('the first edit committed', async () => (await opRows(['nul-reason'])) === 1)
  await publishEdit(js, 'acme', 'nul-reason', bad)
  await publishEdit(js, 'acme', 'nul-reason', edit('after', 2))
  await until('the edit after it committed', async () => (await opRows(['nul-reason'])) === 2, 20_000)
  const dead = (await stack.db.query("SELECT reason FROM dead_letters WHERE doc_id = 'nul-reason'")).rows
  t.equal(dead.length, 1, 'dead-lettered once')
  t.match(dead[0].reason, /\\u0000/, 'the NUL written as \\u0000')
})
