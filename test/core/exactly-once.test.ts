import t from 'tap'
import { readDocState } from '../../core/store.ts'
import * as Y from 'yjs'
import { jetstream } from '@nats-io/jetstream'
import { editIngestSubject, encodeEnvelope } from '../../contracts/mod.ts'
import { edit, publishEdit } from '../helpers/edits.ts'
import { setup, token } from '../helpers/setup.ts'
import { readState, until } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
let core = await stack.core()
const nc = await stack.connect()
const js = jetstream(nc)

const publish = (docId: string, update: Uint8Array, msgID?: string) => publishEdit(js, 'acme', docId, update, msgID)

const opRows = async (docId: string) => (await stack.db.query('SELECT count(*)::int AS n FROM op_log WHERE doc_id = $1', [docId])).rows[0].n as number

t.test('core - the same update published twice with one msg id is one op-log row', async (t) => {
  const update = edit('once', 1)
  const first = await publish('dup-id', update)
  const second = await publish('dup-id', update)
  t.equal(first.duplicate, false)
  t.equal(second.duplicate, true, 'JetStream drops the second inside the dedup window')
  await until('materialized', async () => (await opRows('dup-id')) === 1)
  await publish('dup-id', edit('!', 2))
  await until('later edit materialized', async () => (await opRows('dup-id')) === 2)
  t.equal(await opRows('dup-id'), 2)
})

t.test('core - a retry with a new msg id (outside the window) is counted, not logged twice', async (t) => {
  const update = edit('retry', 3)
  await publish('dup-content', update)
  await publish('dup-content', update, 'acme:some-other-id')
  await publish('dup-content', edit('+', 4))
  await until('both distinct edits materialized', async () => (await opRows('dup-content')) === 2)
  const doc = await readState(core.url, 'dup-content', await token({ tenant: 'acme' }))
  t.equal(typeof doc !== 'number' && doc.getText('t').toString().length, 'retry+'.length, 'state holds each character once')
  const metrics = await (await fetch(`${core.opsUrl}/metrics`)).text()
  t.match(metrics, /docflow_core_updates_total\{outcome="duplicate"[^}]*\} [1-9]/)
})

t.test('core - replaying the whole stream from sequence 1 changes nothing', async (t) => {
  const snapshot = async () => {
    const rows = (await stack.db.query('SELECT DISTINCT tenant, doc_id FROM op_log ORDER BY tenant, doc_id')).rows
    return Promise.all(rows.map(async (r) => {
      const doc = new Y.Doc()
      Y.applyUpdate(doc, (await readDocState(stack.db, r.tenant, r.doc_id))!)
      return `${r.tenant}/${r.doc_id}: ${doc.getText('t').toString()}`
    }))
  }
  const checkpoints = async () => (await stack.db.query('SELECT consumer, stream_seq FROM consumer_checkpoints ORDER BY consumer')).rows
  const before = await snapshot()
  const checkpointsBefore = await checkpoints()
  const rowsBefore = (await stack.db.query('SELECT count(*)::int AS n FROM op_log')).rows[0].n
  await core.stop()
  await stack.db.query('UPDATE consumer_checkpoints SET stream_seq = 0')
  core = await stack.core()
  await until('every partition replayed to where it was', async () => JSON.stringify(await checkpoints()) === JSON.stringify(checkpointsBefore))
  t.equal((await stack.db.query('SELECT count(*)::int AS n FROM op_log')).rows[0].n, rowsBefore, 'no op-log row added')
  t.same(await snapshot(), before, 'same documents')
})

t.test('core - malformed messages are dead-lettered with the reason and do not block the partition', async (t) => {
  await js.publish(editIngestSubject('acme', 'dl-doc'), new TextEncoder().encode('not msgpack at all'), { msgID: 'acme:garbage-1' })
  const env = encodeEnvelope({ v: 1, tenant: 'acme', docId: 'dl-doc', userId: 'u', update: new Uint8Array([1, 2, 3, 200]), ingestTs: Date.now(), edgeId: 'test' })
  await js.publish(editIngestSubject('acme', 'dl-doc'), env, { msgID: 'acme:garbage-2' })
  const wrongDoc = encodeEnvelope({ v: 1, tenant: 'acme', docId: 'other-doc', userId: 'u', update: edit('x', 9), ingestTs: Date.now(), edgeId: 'test' })
  await js.publish(editIngestSubject('acme', 'dl-doc'), wrongDoc, { msgID: 'acme:garbage-3' })
  await publish('dl-doc', edit('good', 5))
  await until('good edit applied after the bad ones', async () => (await opRows('dl-doc')) === 1)
  const dl = (await stack.db.query("SELECT reason FROM dead_letters WHERE subject LIKE '%dl-doc' ORDER BY stream_seq")).rows.map((r) => r.reason as string)
  t.equal(dl.length, 3)
  t.match(dl[0], /^decode|^schema/)
  t.match(dl[1], /Yjs|decode|Unexpected|update/i)
  t.match(dl[2], /differ from the subject/)
})
