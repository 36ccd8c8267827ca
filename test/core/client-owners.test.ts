import t from 'tap'
import * as Y from 'yjs'
import { jetstream } from '@nats-io/jetstream'
import { editBatchMsgId, editBatchSubject, editPartitionOf, encodeBatch } from '../../contracts/mod.ts'
import { readDocState } from '../../core/store.ts'
import { edit, forgeNextClocks, publishEdit, replicaOf, typed, withTrailingSkip } from '../helpers/edits.ts'
import { setup } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'

// Core's data-quality check of who writes under which Yjs client id (core/client-users.ts).
const stack = await setup()
t.teardown(() => stack.cleanup())
let running = await stack.core()
const js = jetstream(await stack.connect())

const opRows = async (docId: string) => (await stack.db.query('SELECT count(*)::int AS n FROM op_log WHERE doc_id = $1', [docId])).rows[0].n as number
const deadRows = async (docId: string) => (await stack.db.query('SELECT reason FROM dead_letters WHERE doc_id = $1 ORDER BY id', [docId])).rows as { reason: string }[]
const text = async (docId: string) => {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, (await readDocState(stack.db, 'acme', docId))!)
  return doc.getText('t').toString()
}
/** Publishes to `docId` as `user` (over HTTP when `source` says so). */
const by = (docId: string, user: string, source?: 'http') => (update: Uint8Array) => publishEdit(js, 'acme', docId, update, undefined, undefined, source, user)
/** Waits until `n` of the document's updates are settled: stored or dead-lettered. */
const settled = (docId: string, n: number) => until(`${n} updates settled`, async () => (await opRows(docId)) + (await deadRows(docId)).length === n)
/** Stops core and starts a new one, which knows the owners only from what is stored. */
const restartCore = async () => {
  await running.stop()
  running = await stack.core()
}
/** The next edit of `doc` (by its own client), encoded alone. */
const nextEdit = (doc: Y.Doc, change: (text: Y.Text) => void) => {
  const before = Y.encodeStateVector(doc)
  change(doc.getText('t'))
  return Y.encodeStateAsUpdate(doc, before)
}

t.test("core - structs under a Yjs client id another user first wrote with are refused (foreign-client), after a restart too; the owner's next edit is stored", async (t) => {
  const docId = 'dq-foreign-client'
  const as = (user: string) => (update: Uint8Array) => publishEdit(js, 'acme', docId, update, undefined, undefined, undefined, user)
  // The author writes with client 61 (the document is new: its state and owners are written at
  // once) and then with client 62 (an op-log row after that state: its owner is in the tail).
  const author = typed(61, 'mine ')
  await as('author')(Y.encodeStateAsUpdate(author))
  await until('the first edit stored', async () => (await opRows(docId)) === 1)
  const tab = replicaOf(author, 62)
  const tabBefore = Y.encodeStateVector(tab)
  tab.getText('t').insert(5, 'too ')
  await as('author')(Y.encodeStateAsUpdate(tab, tabBefore))
  await until('the second edit stored', async () => (await opRows(docId)) === 2)
  Y.applyUpdate(author, Y.encodeStateAsUpdate(tab, Y.encodeStateVector(author)))

  const forge = (client: number, what: string) => forgeNextClocks(author, client, what)
  const refusals = async () => (await deadRows(docId)).filter((r) => r.reason.startsWith('foreign-client')).length
  await as('co-editor')(forge(61, 'FORGED '))
  await until('the forgery refused', async () => (await refusals()) === 1)
  t.equal(await text(docId), 'mine too ', 'not stored')

  // A new core knows the owners from the stored state (61) and from the op-log tail after it (62).
  await restartCore()
  await as('co-editor')(forge(61, 'AGAIN '))
  await as('co-editor')(forge(62, 'TAIL '))
  await until('both forgeries refused', async () => (await refusals()) === 3)

  const before = Y.encodeStateVector(author)
  author.getText('t').insert(9, 'offline')
  await as('author')(Y.encodeStateAsUpdate(author, before))
  await until("the author's edit stored", async () => (await text(docId)) === 'mine too offline')
  t.equal(await opRows(docId), 3, 'only the author\'s updates are in the op log')
})

t.test("core - an update releasing another user's pending structs (a redelivery applied out of stream order) answers only for its own: both go in", async (t) => {
  const docId = 'dq-owners-release-other'
  const bob = typed(71, 'b ')
  await by(docId, 'bob')(Y.encodeStateAsUpdate(bob))
  const alice = replicaOf(bob, 72)
  const hers = nextEdit(alice, (text) => text.insert(2, 'A'))
  Y.applyUpdate(bob, hers)
  await by(docId, 'bob')(nextEdit(bob, (text) => text.insert(3, 'B'))) // next to her char: pending without it
  await by(docId, 'alice')(hers)
  await settled(docId, 3)
  t.same(await deadRows(docId), [], 'nothing refused')
  t.equal(await text(docId), 'b AB', 'both edits stored')
})

t.test("core - a forgery with a clock gap is refused on arrival: it cannot wait pending for its owner's next edit to release it", async (t) => {
  const docId = 'dq-owners-pending-forgery'
  const alice = typed(73, 'mine ')
  await by(docId, 'alice')(Y.encodeStateAsUpdate(alice))
  const forger = replicaOf(alice, 73)
  nextEdit(forger, (text) => text.insert(5, 'x')) // clock 5, never sent: the gap
  const forged = nextEdit(forger, (text) => text.insert(6, 'FORGED'.repeat(5)))
  t.same([...Y.parseUpdateMeta(forged).from], [[73, 6]], 'the forgery skips a clock of hers')
  await by(docId, 'mallory', 'http')(forged)
  await settled(docId, 2)
  t.match((await deadRows(docId)).map((r) => r.reason), [/^foreign-client/], 'refused at once')
  await by(docId, 'alice')(nextEdit(alice, (text) => text.insert(5, 'offline')))
  await until("her offline edit stored, and nothing else", async () => (await text(docId)) === 'mine offline')
})

t.test("core - a pending first update claims its client: the writer filling its gap under that id is refused, live and after a restart alike", async (t) => {
  const docId = 'dq-owners-pending-claim'
  await by(docId, 'bob')(edit('m', 90)) // the document's state: what follows is its op-log tail
  const alice = typed(91, 'abcde')
  await by(docId, 'alice', 'http')(nextEdit(alice, (text) => text.insert(5, 'fghij'))) // waits for 91:0..4
  await by(docId, 'mallory', 'http')(edit('ZZZZZ', 91)) // 91:0..4 from another user
  await settled(docId, 3)
  t.match((await deadRows(docId)).map((r) => r.reason), [/^foreign-client/], "mallory's fill refused")
  await restartCore()
  await by(docId, 'alice', 'http')(Y.encodeStateAsUpdate(alice)) // her whole client: fills the gap
  await until('her text stored whole', async () => (await text(docId)).includes('abcdefghij'))
  t.equal((await deadRows(docId)).length, 1, 'accepted after the restart as it would have been before')
})

t.test("core - an old state with no owners and a relay in its tail: the author keeps her client id after a rebuild and after a restart", async (t) => {
  const docId = 'dq-owners-relay'
  const alice = typed(81, 'old ')
  await by(docId, 'alice')(Y.encodeStateAsUpdate(alice))
  await settled(docId, 1)
  await stack.db.query('UPDATE docs SET client_users = NULL WHERE doc_id = $1', [docId]) // compacted before migration 013
  await restartCore()
  // Bob's phone resends the whole document (her structs too) with a char of its own; in the same
  // stream message, a forgery under bob's client: refused, and the document rebuilt from the
  // store plus bob's update, which the batch holds uncommitted.
  const bob = replicaOf(alice, 82)
  bob.getText('t').insert(4, 'b')
  const partition = editPartitionOf(docId, stack.partitions)
  const updates = [{ docId, userId: 'bob', update: Y.encodeStateAsUpdate(bob), ingestTs: Date.now() }, { docId, userId: 'mallory', update: forgeNextClocks(bob, 82, 'M'), ingestTs: Date.now() }]
  await js.publish(editBatchSubject('acme', partition), encodeBatch({ v: 2, tenant: 'acme', partition, edgeId: 'test', updates }), { msgID: editBatchMsgId('acme', 'dq-owners-relay', 1) })
  await by(docId, 'alice')(nextEdit(alice, (text) => text.insert(0, '1')))
  await by(docId, 'alice')(nextEdit(alice, (text) => text.insert(0, '2')))
  await settled(docId, 5)
  await restartCore()
  await by(docId, 'alice')(nextEdit(alice, (text) => text.insert(0, '3')))
  await settled(docId, 6)
  t.match((await deadRows(docId)).map((r) => r.reason), [/^foreign-client: client 82 /], 'only the forgery refused')
  t.equal(await text(docId), '321old b')
})

t.test("core - a client's clocks resent while the document holds them pending are no writing under its id: a reconnecting co-editor's offline edit goes in", async (t) => {
  const docId = 'dq-owners-pending-resend'
  const bob = typed(74, 'b ')
  await by(docId, 'bob')(Y.encodeStateAsUpdate(bob))
  const alice = replicaOf(bob, 75)
  const first = nextEdit(alice, (text) => text.insert(2, 'A'))
  const second = nextEdit(alice, (text) => text.insert(3, 'a'))
  await by(docId, 'alice', 'http')(second) // out of order: pending, and alice's client claimed
  await settled(docId, 2)
  // Carol's client got the pending struct (rooms fan posts out); its sync step 2 on reconnecting
  // carries it with her offline edit.
  const carol = replicaOf(bob, 76)
  Y.applyUpdate(carol, second)
  const served = Y.encodeStateVector(bob)
  carol.getText('t').insert(0, 'C')
  await by(docId, 'carol')(Y.encodeStateAsUpdate(carol, served))
  await by(docId, 'alice', 'http')(first)
  await settled(docId, 4)
  t.same((await deadRows(docId)).map((r) => r.reason), [], 'nothing refused')
  await until('every edit stored', async () => (await text(docId)) === 'Cb Aa')
})

t.test('core - a Skip writes no clock: an update ending in a Skip of a client no one wrote with claims nothing, before or after a restart', async (t) => {
  const docId = 'dq-owners-skip'
  const bob = typed(77, 'base ')
  await by(docId, 'bob')(Y.encodeStateAsUpdate(bob))
  const mallory = replicaOf(bob, 78)
  await by(docId, 'mallory')(withTrailingSkip(nextEdit(mallory, (text) => text.insert(0, 'm')), 79, 100))
  const alice = replicaOf(bob, 79) // her new tab happens to be client 79
  Y.applyUpdate(alice, Y.encodeStateAsUpdate(mallory))
  await by(docId, 'alice')(nextEdit(alice, (text) => text.insert(0, 'A')))
  await settled(docId, 3)
  await restartCore()
  await by(docId, 'alice')(nextEdit(alice, (text) => text.insert(0, 'B')))
  await until('her edits stored', async () => (await text(docId)) === 'BAmbase ')
  t.same(await deadRows(docId), [], 'nothing refused')
})
