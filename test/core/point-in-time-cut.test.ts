// An edge sends what a lane gathered while its previous batch was in flight as one stream message:
// updates of several moments, each with its own ingest time. A point in time can fall inside it.
import t from 'tap'
import * as Y from 'yjs'
import { jetstream } from '@nats-io/jetstream'
import { editBatchMsgId, editBatchSubject, editPartitionOf, encodeBatch } from '../../contracts/mod.ts'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const edge = await stack.edge()
const core = await stack.core({ edgeUrl: edge.url.replace(/^ws:/, 'http:') })
const js = jetstream(await stack.connect())
const alice = await token({ tenant: 'acme', sub: 'alice' })
const headers = { authorization: `Bearer ${alice}` }

/**
 * Alice's "a" at t0 and "b" a second later in one stream message; with `otherEdge`, another edge's
 * message right after it, ingested between them (a map entry). The time between "a" and "b".
 */
async function twoMomentsInOneMessage(docId: string, clientID: number, n: number, otherEdge = false): Promise<string> {
  const doc = new Y.Doc()
  doc.clientID = clientID
  const updates: Uint8Array[] = []
  doc.on('update', (u: Uint8Array) => updates.push(u))
  doc.getText('t').insert(0, 'a')
  doc.getText('t').insert(1, 'b')
  const t0 = Date.now() - 5_000
  const partition = editPartitionOf(docId, stack.partitions)
  const batch = encodeBatch({ v: 2, tenant: 'acme', partition, edgeId: 'e1', updates: [
    { docId, userId: 'alice', update: updates[0]!, ingestTs: t0 },
    { docId, userId: 'alice', update: updates[1]!, ingestTs: t0 + 1_000 },
  ] })
  await js.publish(editBatchSubject('acme', partition), batch, { msgID: editBatchMsgId('acme', 'e1', n) })
  if (otherEdge) {
    const other = new Y.Doc()
    other.clientID = clientID + 1_000
    other.getMap('m').set('x', 'from edge 2')
    const message = encodeBatch({ v: 2, tenant: 'acme', partition, edgeId: 'e2', updates: [{ docId, userId: 'bob', update: Y.encodeStateAsUpdate(other), ingestTs: t0 + 200 }] })
    await js.publish(editBatchSubject('acme', partition), message, { msgID: editBatchMsgId('acme', 'e2', n) })
  }
  await until('committed', async () => (await materializedText(core.url, docId, alice)) === 'ab')
  return new Date(t0 + 500).toISOString()
}

t.test('core - state and blame at a time inside a stream message hold only its updates ingested by then', async (t) => {
  const between = await twoMomentsInOneMessage('cut-read', 77, 1)
  const res = await fetch(`${core.url}/v1/docs/cut-read/state?at=${between}`, { headers })
  t.equal(res.status, 200)
  const at = new Y.Doc()
  Y.applyUpdate(at, new Uint8Array(await res.arrayBuffer()))
  t.equal(at.getText('t').toString(), 'a', '"b" came after')
  const blame = (await (await fetch(`${core.url}/v1/docs/cut-read/blame?at=${between}`, { headers })).json()) as { spans: { text: string; user: string }[] }
  t.same(blame.spans.map((s) => [s.text, s.user]), [['a', 'alice']], 'blame at that time too')
})

t.test('core - rollback to a time inside a stream message reverts its updates ingested after it', async (t) => {
  const between = await twoMomentsInOneMessage('cut-rollback', 78, 2)
  const res = await fetch(`${core.url}/v1/docs/cut-rollback/rollback`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ to: between }) })
  const body = (await res.json()) as { status: string }
  t.equal(res.status, 202)
  t.equal(body.status, 'accepted', JSON.stringify(body))
  await until('the rollback is materialized', async () => (await materializedText(core.url, 'cut-rollback', alice)) === 'a')
})

t.test("core - a time inside one edge's stream message, followed by another edge's message ingested before it: state holds what was ingested by then, rollback reverts the rest", async (t) => {
  const between = await twoMomentsInOneMessage('cut-two-edges', 79, 3, true)
  const at = new Y.Doc()
  const res = await fetch(`${core.url}/v1/docs/cut-two-edges/state?at=${between}`, { headers })
  Y.applyUpdate(at, new Uint8Array(await res.arrayBuffer()))
  t.equal(at.getMap('m').get('x'), 'from edge 2', "the other edge's update (ingested before) is in")
  t.equal(at.getText('t').toString(), 'a', '"b" came after')
  const rolled = await fetch(`${core.url}/v1/docs/cut-two-edges/rollback`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ to: between }) })
  t.equal(((await rolled.json()) as { status: string }).status, 'accepted')
  await until('the rollback is materialized', async () => (await materializedText(core.url, 'cut-two-edges', alice)) === 'a')
})
