import t from 'tap'
import * as Y from 'yjs'
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream'
import { AGG_STREAM, DLQ_STREAM, MSG_ID_HEADER, ServiceUser, decodeDeadLetterEvent, decodeEnvelope, deadLetterMsgId, editIngestSubject, editPartitionOf, type DeadLetterEvent } from '../../contracts/mod.ts'
import { pack } from '../../contracts/codec.ts'
import { versionTransition } from '../../core/apply.ts'
import { readDocState } from '../../core/store.ts'
import { edit, malformedEdit, publishEdit, releaseCase } from '../helpers/edits.ts'
import { setup } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'

const GAP_REPORT_AFTER_MS = 1_000
const stack = await setup()
t.teardown(() => stack.cleanup())
let running = await stack.core({ gapReportAfterMs: GAP_REPORT_AFTER_MS })
let core = running.core
const js = jetstream(await stack.connect())
const jsm = await jetstreamManager(await stack.connect(ServiceUser.Admin))

const opRows = async (docId: string) => (await stack.db.query('SELECT count(*)::int AS n FROM op_log WHERE doc_id = $1', [docId])).rows[0].n as number
const deadRows = async (docId: string) => (await stack.db.query('SELECT stream, stream_seq, item, reason, payload, resolved_at FROM dead_letters WHERE doc_id = $1 ORDER BY id', [docId])).rows
const text = async (docId: string) => {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, (await readDocState(stack.db, 'acme', docId))!)
  return doc.getText('t').toString()
}
const metric = async (m: { get(): Promise<{ values: { value: number; labels: Record<string, unknown> }[] }> }, labels: Record<string, string>) =>
  (await m.get()).values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value ?? 0

/** Every message of the dead-letter stream, decoded by its zod schema, with its Nats-Msg-Id. */
async function dlq(j: JetStreamManager): Promise<(DeadLetterEvent & { msgId: string | undefined })[]> {
  const info = await j.streams.info(DLQ_STREAM)
  const out = []
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await j.streams.getMessage(DLQ_STREAM, { seq })
    if (m) out.push({ ...decodeDeadLetterEvent(m.data), msgId: m.header?.get(MSG_ID_HEADER) })
  }
  return out
}

/** A doc id in the same partition as `docId` (nats-server hashes doc ids as editPartitionOf does). */
const neighbourOf = (docId: string) => Array.from({ length: 200 }, (_, i) => `${docId}-neighbour-${i}`).find((d) => editPartitionOf(d, stack.partitions) === editPartitionOf(docId, stack.partitions))!

/** `base` (by client `baseClient`) with `change` made by `clientID`, encoded from clock 0 of every client (a full resend). */
function fullStateAfter(base: Uint8Array, clientID: number, change: (text: Y.Text) => void): Uint8Array {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, base)
  doc.clientID = clientID // after applyUpdate: Yjs regenerates an id that remote structs carry
  change(doc.getText('t'))
  return Y.encodeStateAsUpdate(doc)
}

t.test('core - a stored state and a tail carrying the same ids read as core applied them, in stream order, not merged', async (t) => {
  const docId = 'dq-merge'
  // Found by fuzzing Y.mergeUpdates against applying in order: client 7 types "abcd"; then two
  // updates of client 9 that also carry client 7 from clock 0 with other content (each adds
  // clocks of client 9, so each is logged; core records the overlaps and applies them).
  const updates = ['AQEHAAQBAXQEYWJjZAA=', 'AgEJAEQHAAJhYgEHAAQBAXQBYQA=', 'AgEJAEQHAAJhYgIHAAQBAXQBYUQJAARhYmNkAA=='].map((b) => Buffer.from(b, 'base64'))
  const asApplied = new Y.Doc()
  for (const u of updates) Y.applyUpdate(asApplied, u)
  const stored = (update: Uint8Array) => {
    const doc = new Y.Doc()
    Y.applyUpdate(doc, update)
    return doc.getText('t').toString()
  }
  const expected = stored(Y.encodeStateAsUpdate(asApplied))
  t.not(stored(Y.mergeUpdates(updates)), expected, 'merging them is not applying them in order')
  for (const [i, u] of updates.entries()) {
    await publishEdit(js, 'acme', docId, u)
    await until(`update ${i + 1} committed`, async () => (await opRows(docId)) === i + 1)
  }
  t.equal(await text(docId), expected, 'the stored state (the first, a new document) plus its tail read as applied in order')
})

t.test('core - a retry is counted per tenant and dropped; the same op ids with other content are dead-lettered, their content never replaces what the doc holds, and the doc ends as every client has it', async (t) => {
  const docId = 'dq-dup'
  const neighbour = neighbourOf(docId)
  const base = edit('hello', 7)
  await publishEdit(js, 'acme', docId, base)
  await until('base committed', async () => (await opRows(docId)) === 1)

  const duplicatesBefore = await metric(core.metrics.duplicateUpdates, { tenant: 'acme' })
  await publishEdit(js, 'acme', docId, base, 'retry-of-base') // another msg id: JetStream stores it, core sees a retry
  await publishEdit(js, 'acme', neighbour, edit('n1', 30))
  await until('neighbour committed after the retry', async () => (await opRows(neighbour)) === 1)
  t.equal(await metric(core.metrics.duplicateUpdates, { tenant: 'acme' }), duplicatesBefore + 1, 'the retry is counted for its tenant')
  t.equal(await opRows(docId), 1, 'and dropped')
  t.equal((await deadRows(docId)).length, 0, 'a retry is no violation')

  // Client 7 again from clock 0, other text: inside what the doc holds (conflicting duplicate) ...
  const conflicting = edit('HELLO', 7)
  // ... and starting below the doc's state but going past it (its clock went backwards).
  const regressed = edit('HOWDY partner', 7)
  await publishEdit(js, 'acme', docId, conflicting)
  await publishEdit(js, 'acme', docId, regressed)
  await publishEdit(js, 'acme', neighbour, edit('n2', 31))
  await until('neighbour committed after the violations', async () => (await opRows(neighbour)) === 2)
  const dead = await deadRows(docId)
  t.equal(dead.length, 2, 'both violations dead-lettered')
  t.match(dead[0].reason, /^conflicting-duplicate: client 7 clock 0 /, 'a changed range inside the doc is a conflicting duplicate')
  t.match(dead[1].reason, /^clock-regression: client 7 clock 0 /, 'a changed range that goes on past the doc is a clock regression')
  t.same(Buffer.from(decodeEnvelope(dead[0].payload).update), Buffer.from(conflicting), 'with the original bytes')
  // What every client that received them holds: the doc's own content for clocks 0-4 ("hello"),
  // the regressed update's tail past them (" partner", placed after its own clock 4).
  const clientView = new Y.Doc()
  for (const u of [base, conflicting, regressed]) Y.applyUpdate(clientView, u)
  t.equal(clientView.getText('t').toString(), 'hello partner', 'Yjs keeps the first content of an id and adds the tail')
  await until('the materialized doc is what clients hold', async () => (await text(docId)) === 'hello partner')
  t.equal(await opRows(docId), 2, 'the regression is logged (it added clocks); the conflicting duplicate added nothing')
  t.ok((await metric(core.metrics.deadLetters, { reason: 'conflicting-duplicate', tenant: 'acme' })) >= 1, 'counted with reason and tenant')

  // The same resend with its own content plus new clocks is no violation: Yjs applies the new part.
  const resend = fullStateAfter(Y.encodeStateAsUpdate(clientView), 7, (text) => text.insert(13, ' world'))
  await publishEdit(js, 'acme', docId, resend)
  await until('the honest resend applied', async () => (await text(docId)) === 'hello partner world')
  t.equal((await deadRows(docId)).length, 2, 'no new dead letter')

  await until('both violations on the dead-letter stream', async () => (await dlq(jsm)).filter((e) => e.docId === docId).length === 2)
  const events = (await dlq(jsm)).filter((e) => e.docId === docId)
  for (const [i, e] of events.entries()) {
    t.equal(e.reason, dead[i].reason, 'the stream says the same reason as the table')
    t.equal(e.tenant, 'acme')
    t.equal(e.sourceStream, AGG_STREAM)
    t.equal(e.sourceSeq, Number(dead[i].stream_seq), 'the source stream sequence')
    t.same(Buffer.from(e.payload), Buffer.from(dead[i].payload), 'the original bytes')
    t.equal(e.msgId, deadLetterMsgId(AGG_STREAM, e.sourceSeq, e.item, 'conflicting-duplicate'), 'message id derived from the source update (replays dedup)')
  }
})

t.test('core - a retried update holding a bigint is a retry, and the same id with another bigint a conflicting duplicate: neither stalls its partition', async (t) => {
  const docId = 'dq-bigint'
  const neighbour = neighbourOf(docId)
  const mapEdit = (value: bigint) => {
    const doc = new Y.Doc()
    doc.clientID = 12
    doc.getMap('m').set('k', value)
    return Y.encodeStateAsUpdate(doc)
  }
  const first = mapEdit(10n)
  await publishEdit(js, 'acme', docId, first)
  await until('the bigint edit committed', async () => (await opRows(docId)) === 1)
  // Ids the doc holds, so their content is compared (JSON.stringify throws on a bigint).
  await publishEdit(js, 'acme', docId, first, 'bigint-retry')
  await publishEdit(js, 'acme', docId, mapEdit(11n))
  await publishEdit(js, 'acme', neighbour, edit('after the bigints', 42))
  await until('the neighbour committed after them', async () => (await opRows(neighbour)) === 1, 15_000)
  const dead = await deadRows(docId)
  t.equal(dead.length, 1, 'only the other content is dead-lettered')
  t.match(dead[0].reason, /^conflicting-duplicate: client 12 clock 0 .*\(content\)/)
  const doc = new Y.Doc()
  Y.applyUpdate(doc, (await readDocState(stack.db, 'acme', docId))!)
  t.equal(doc.getMap('m').get('k'), 10n, 'the doc keeps the content it holds')
})

t.test('core - a schema failure goes to the dead-letter stream with its reason and tenant', async (t) => {
  const docId = 'dq-schema'
  const neighbour = neighbourOf(docId)
  await js.publish(editIngestSubject('acme', docId), pack({ v: 1, tenant: 'acme', docId, userId: 'u' }), { msgID: 'acme:schema-bad' })
  await publishEdit(js, 'acme', neighbour, edit('after', 40))
  await until('neighbour committed after the bad envelope', async () => (await opRows(neighbour)) === 1)
  await until('on the dead-letter stream', async () => (await dlq(jsm)).some((e) => e.docId === docId))
  const e = (await dlq(jsm)).find((x) => x.docId === docId)!
  t.match(e.reason, /^schema: .*update/, 'the zod reason names the missing field')
  t.equal(e.tenant, 'acme', 'tenant from the stored subject')
  t.ok((await metric(core.metrics.deadLetters, { reason: 'schema', tenant: 'acme' })) >= 1, 'counted with the tenant label')
})

t.test('core - an item naming one struct as both its neighbours is dead-lettered as malformed and never applied', async (t) => {
  const docId = 'dq-malformed'
  const { base, malformed } = malformedEdit()
  await publishEdit(js, 'acme', docId, base)
  await publishEdit(js, 'acme', docId, malformed)
  await publishEdit(js, 'acme', docId, edit('!', 41))
  await until('the edit after it committed', async () => (await opRows(docId)) === 2)
  const dead = await deadRows(docId)
  t.equal(dead.length, 1)
  t.match(dead[0].reason, /^malformed-item: item 8:0 has the same struct as its left and right neighbour/)
  t.equal((await text(docId)).replace('!', ''), 'ab', 'the doc never took it')
  t.ok((await metric(core.metrics.deadLetters, { reason: 'malformed-item', tenant: 'acme' })) >= 1, 'counted with reason and tenant')
})

/** `clientID` types "abc" (`first`), then "def" (`second`): `second` alone waits for clocks 0-2. */
function gapEdits(clientID: number): { first: Uint8Array; second: Uint8Array } {
  const author = new Y.Doc()
  author.clientID = clientID
  author.getText('t').insert(0, 'abc')
  const first = Y.encodeStateAsUpdate(author)
  const sv = Y.encodeStateVector(author)
  author.getText('t').insert(3, 'def')
  return { first, second: Y.encodeStateAsUpdate(author, sv) }
}

t.test('core - a gap that does not fill in time is reported per document, and cleared when it fills', async (t) => {
  const docId = 'dq-gap'
  const { first, second } = gapEdits(9)

  await publishEdit(js, 'acme', docId, second)
  await until('the gap reported', async () => (await deadRows(docId)).length === 1, 10_000 + GAP_REPORT_AFTER_MS)
  const [row] = await deadRows(docId)
  t.match(row.reason, /^sequence-gap: client 9 expected clock 0/, 'names the client and the clock the doc expects')
  t.equal(row.resolved_at, null, 'open')
  t.equal(await metric(core.metrics.docsWithSequenceGaps, { tenant: 'acme' }), 1, 'the document counts in the gauge for its tenant')
  t.equal(await metric(core.metrics.sequenceGaps, { tenant: 'acme' }), 1, 'and the counter')
  t.equal(await opRows(docId), 1, 'the pending update stays in the op log (report only)')
  await until('the report on the dead-letter stream', async () => (await dlq(jsm)).some((e) => e.docId === docId && e.reason.startsWith('sequence-gap')))

  await publishEdit(js, 'acme', docId, first)
  await until('the gap filled', async () => (await text(docId)) === 'abcdef')
  await until('the report cleared', async () => (await metric(core.metrics.docsWithSequenceGaps, { tenant: 'acme' })) === 0 && (await deadRows(docId))[0].resolved_at !== null)
  t.pass('gauge back to 0 and the row resolved')
})

for (const [name, meanwhile] of [['in the batch that loads it', false], ['later', true]] as const) t.test(`core - a gap reported before a restart is resolved when it fills after it, ${name}`, async (t) => {
  const docId = `dq-gap-restart-${meanwhile}`
  const { first, second } = gapEdits(14)
  await publishEdit(js, 'acme', docId, second)
  await until('the gap reported', async () => (await deadRows(docId)).length === 1, 10_000 + GAP_REPORT_AFTER_MS)

  await running.stop()
  running = await stack.core({ gapReportAfterMs: GAP_REPORT_AFTER_MS })
  core = running.core
  if (meanwhile) {
    // Another client's edit loads the document, its gap still open: the new core takes the report over.
    const other = new Y.Doc()
    other.clientID = 15
    other.getMap('m').set('k', 'v')
    await publishEdit(js, 'acme', docId, Y.encodeStateAsUpdate(other))
    await until('the open report counted again', async () => (await metric(core.metrics.docsWithSequenceGaps, { tenant: 'acme' })) === 1)
  }
  await publishEdit(js, 'acme', docId, first)
  await until('the gap filled', async () => (await text(docId)) === 'abcdef')
  await until('the earlier report resolved', async () => (await deadRows(docId))[0].resolved_at !== null)
  t.equal((await deadRows(docId)).length, 1, 'no second report')
  t.equal(await metric(core.metrics.docsWithSequenceGaps, { tenant: 'acme' }), 0, 'the gauge is back to 0')
})

t.test('core - HTTP updates posted out of order wait pending without stalling their partition, and apply once the gap fills', async (t) => {
  const docId = 'dq-http-gap'
  const author = new Y.Doc()
  author.clientID = 11
  const typed: Uint8Array[] = []
  author.on('update', (u: Uint8Array) => typed.push(u))
  for (const [i, c] of [...'xyz'].entries()) author.getText('t').insert(i, c)
  const post = (u: Uint8Array) => publishEdit(js, 'acme', docId, u, undefined, undefined, 'http')

  await post(typed[0]!)
  await post(typed[2]!) // its client's clock 1 has not arrived: Yjs holds it pending
  const neighbour = neighbourOf(docId)
  await publishEdit(js, 'acme', neighbour, edit('after', 12))
  await until('the same partition moves on', async () => (await readDocState(stack.db, 'acme', neighbour)) !== null)
  t.equal(await text(docId), 'x', 'what arrived in order is materialized')
  t.same(await deadRows(docId), [], 'nothing refused')

  await post(typed[1]!)
  await until('the gap filled', async () => (await text(docId)) === 'xyz')
  t.same(await deadRows(docId), [], 'still nothing refused')
})

async function storedOf(docId: string): Promise<Y.Doc> {
  const neighbour = neighbourOf(docId)
  await publishEdit(js, 'acme', neighbour, edit(docId, 13))
  await until('the same partition moved on', async () => (await readDocState(stack.db, 'acme', neighbour)) !== null)
  const stored = new Y.Doc()
  Y.applyUpdate(stored, (await readDocState(stack.db, 'acme', docId))!)
  return stored
}

for (const releaser of ['http', 'socket'] as const) {
  t.test(`core - a pending item released by its own client's later update (${releaser}) is judged then: a misplaced one never goes in`, async (t) => {
    const docId = `dq-own-release-${releaser}`
    const { base, mapEntry, arrayItem } = releaseCase(10, 10) // 10:1 waits for its own client's clock 0
    const post = (u: Uint8Array, source?: 'http') => publishEdit(js, 'acme', docId, u, undefined, undefined, source)
    await post(base, 'http')
    await post(arrayItem, 'http') // pending: its clock 0 has not arrived
    await post(mapEntry, releaser === 'http' ? 'http' : undefined) // releases it
    await until('the release refused', async () => (await deadRows(docId)).length === 1)
    const [row] = await deadRows(docId)
    t.match(row.reason, /^malformed-item: item 10:1 names a right neighbour in another list/, 'names the released item')
    t.same((await storedOf(docId)).getArray('a').toJSON(), [1, 2], 'the misplaced item is not in the stored state')
  })
}

t.test("core - an HTTP item naming another client's struct the document does not have is refused at once: that client's update goes in", async (t) => {
  const docId = 'dq-foreign-release'
  const { base, mapEntry, arrayItem } = releaseCase(30, 20) // 20:0 names 30:0, which client 30 has not sent
  const post = (u: Uint8Array) => publishEdit(js, 'acme', docId, u, undefined, undefined, 'http')
  await post(base)
  await post(arrayItem)
  await until('refused', async () => (await deadRows(docId)).length === 1)
  t.match((await deadRows(docId))[0].reason, /^malformed-item: item 20:0 names 30:0, another client's struct the document does not have yet/)
  await post(mapEntry)
  const stored = await storedOf(docId)
  t.same(stored.getMap('m').toJSON(), { k: 'v', k2: 'w' }, "client 30's edit is stored")
  t.same(stored.getArray('a').toJSON(), [1, 2], 'the refused item is not')
  t.equal((await deadRows(docId)).length, 1, 'nothing else refused')
})

t.test('core - a document version that would go backwards is a violation', async (t) => {
  t.equal(versionTransition(new Map([[1, 5]]), new Map([[1, 4]]), true), 'regressed', 'a client clock going down')
  t.equal(versionTransition(new Map([[1, 5]]), new Map([[1, 5]]), false), 'unchanged', 'nothing moved: a duplicate')
  t.equal(versionTransition(new Map([[1, 5]]), new Map([[1, 5]]), true), 'forward', 'deletions move the version')
  t.equal(versionTransition(new Map([[1, 5]]), new Map([[1, 5], [2, 1]]), false), 'forward', 'a new client')
})
