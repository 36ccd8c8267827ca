import t from 'tap'
import * as Y from 'yjs'
import { jetstream } from '@nats-io/jetstream'
import { readDocState } from '../../core/store.ts'
import { edit, publishEdit } from '../helpers/edits.ts'
import { setup } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'
import { counterValue } from '../helpers/metric-value.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const js = jetstream(await stack.connect())
const COMPACT_EVERY = 5

const opRows = async () => (await stack.db.query("SELECT count(*)::int AS n FROM op_log WHERE doc_id = 'compacted'")).rows[0].n as number
const stored = async () =>
  (await stack.db.query("SELECT d.op_count::int AS folded, (SELECT count(*)::int FROM op_log o WHERE o.tenant = d.tenant AND o.doc_id = d.doc_id AND o.id > d.through_op_id) AS tail FROM docs d WHERE doc_id = 'compacted'")).rows[0] as { folded: number; tail: number } | undefined
const text = async () => {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, (await readDocState(stack.db, 'acme', 'compacted'))!)
  return doc.getText('t').toString()
}

t.test('core - the op log is the record: a state is written for a new doc and every few ops, and a cold load replays the tail', async (t) => {
  let core = await stack.core({ compactEveryOps: COMPACT_EVERY })
  const reference = new Y.Doc()
  const publish = async (i: number) => {
    const update = edit(`${i} `, 100 + i)
    Y.applyUpdate(reference, update)
    await publishEdit(js, 'acme', 'compacted', update)
    await until(`edit ${i} committed`, async () => (await opRows()) === i + 1)
  }
  await publish(0)
  t.same(await stored(), { folded: 1, tail: 0 }, 'a new document gets its state at once')
  for (let i = 1; i <= 3; i++) await publish(i)
  t.same(await stored(), { folded: 1, tail: 3 }, 'the next ops only append to the op log')
  t.equal(await text(), reference.getText('t').toString(), 'materialized = state + tail')

  await core.stop()
  core = await stack.core({ compactEveryOps: COMPACT_EVERY })
  // Cold load: the new core rebuilds the doc from its state and its 3-op tail.
  await publish(4)
  await publish(5)
  t.same(await stored(), { folded: 6, tail: 0 }, `a state once ${COMPACT_EVERY} ops gathered since the last, the cold-loaded tail included`)
  await publish(6)
  t.same(await stored(), { folded: 6, tail: 1 })
  t.equal(await text(), reference.getText('t').toString(), 'every edit once, in the read path')
  t.equal(await counterValue(core.core.metrics.compactions), 1, 'the restarted core compacted once')
})
