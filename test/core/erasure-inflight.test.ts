// A commit in flight while a document is erased, or a tenant removed, must not write the erased
// content back (migration 011: the commit's fence, and the erasure's wait for commits in flight).
import t from 'tap'
import { join } from 'node:path'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { AGG_STREAM, CLEAN_STREAM, DLQ_STREAM, cleanSubject, ServiceUser, decodeDeadLetterEvent, tenantDeadLetterSubjects } from '../../contracts/mod.ts'
import { FsBlobStore } from '../../runtime/blobs/fs-store.ts'
import { eraseDocument } from '../../core/erasure.ts'
import { edit, holdAggHead, malformedEdit, publishEdit } from '../helpers/edits.ts'
import { docNotifier } from '../helpers/doc-notices.ts'
import { setup } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const js = jetstream(await stack.connect())
const admin = await stack.connect(ServiceUser.Admin)
const aggJsm = await jetstreamManager(admin)
const notify = docNotifier(admin)
const blobs = await FsBlobStore.open(join(stack.dir, 'blobs'))
await holdAggHead(js)

/**
 * Holds core's next group commit (it upserts consumer_checkpoints) until `release`: `before` its
 * statement's snapshot (a table lock: the commit waits to start), or `after` it (row locks: the
 * commit has inserted its op-log rows and waits to update its checkpoint).
 */
async function stallCommits(when: 'before' | 'after') {
  const locker = await stack.db.connect()
  await locker.query('BEGIN')
  await locker.query(when === 'before' ? 'LOCK TABLE consumer_checkpoints IN SHARE ROW EXCLUSIVE MODE' : 'SELECT 1 FROM consumer_checkpoints FOR UPDATE')
  return {
    waiting: () => until('a commit waits on the lock', async () => (await stack.db.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO op_log%'")).rows[0].n >= 1),
    release: async () => {
      await locker.query('COMMIT')
      locker.release()
    },
  }
}

const contentOf = async (where: string, arg: string) =>
  (await stack.db.query(`SELECT encode(update, 'escape') AS c FROM op_log WHERE ${where} UNION ALL SELECT encode(state, 'escape') FROM docs WHERE ${where}`, [arg])).rows.map((r) => String(r.c))

for (const when of ['before', 'after'] as const) {
  t.test(`core - a commit in flight during an erasure (held ${when} its snapshot) does not write the document back`, async (t) => {
    const core = await stack.core({ compactEveryOps: 1 })
    t.teardown(() => core.stop())
    const docId = `slow-commit-${when}`
    await publishEdit(js, 'acme', docId, edit('first part ', 51))
    await until('first committed', async () => (await contentOf("tenant = 'acme' AND doc_id = $1", docId)).length > 0)

    const stall = await stallCommits(when)
    await publishEdit(js, 'acme', docId, edit('SSN 078-05-1120', 52))
    await stall.waiting()
    const erasing = eraseDocument({ pool: stack.db, blobs, aggJsm, aggStream: AGG_STREAM, tenantJsm: null, notify }, { tenant: 'acme', docId, actor: 'dpo@test', reason: 'GDPR' })
    await new Promise((r) => setTimeout(r, 2_500)) // longer than the timed wait the erasure used to make
    await stall.release()
    const report = await erasing
    await new Promise((r) => setTimeout(r, 1_000))
    t.same(await contentOf("tenant = 'acme' AND doc_id = $1", docId), [], 'nothing of the erased document is stored')
    if (when === 'after') t.ok(report.rewrittenRows > 0, `the commit's rows erased by the second look (${report.rewrittenRows})`)
  })
}

t.test("core - a dead letter committed in flight during an erasure (held after its snapshot) is erased by the second look, with the update's bytes", async (t) => {
  const core = await stack.core()
  t.teardown(() => core.stop())
  const docId = 'slow-dead-letter'
  const { base, malformed } = malformedEdit()
  await publishEdit(js, 'acme', docId, base)
  await until('the base committed', async () => (await contentOf("tenant = 'acme' AND doc_id = $1", docId)).length > 0)
  const deadLetters = async () => (await stack.db.query("SELECT count(*)::int AS n FROM dead_letters WHERE tenant = 'acme' AND doc_id = $1", [docId])).rows[0].n as number
  // The held commit carries the document's dead letter and no op-log row of it: only the
  // second look's check of dead_letters finds what it wrote.
  const stall = await stallCommits('after')
  await publishEdit(js, 'acme', docId, malformed)
  await stall.waiting()
  const erasing = eraseDocument({ pool: stack.db, blobs, aggJsm, aggStream: AGG_STREAM, tenantJsm: null, notify }, { tenant: 'acme', docId, actor: 'dpo@test', reason: 'GDPR' })
  await new Promise((r) => setTimeout(r, 1_500))
  await stall.release()
  const report = await erasing
  t.equal(await deadLetters(), 0, 'no dead letter of the erased document is stored')
  t.equal(report.rowsRemoved.dead_letters, 1, 'the second look erased the one the held commit wrote')
  t.equal(report.erasureIds.length, 2, 'in a second audited erasure')
})

t.test('core - a commit in flight during a tenant removal (held after its snapshot) does not write the tenant back', async (t) => {
  const core = await stack.core({ compactEveryOps: 1 })
  t.teardown(() => core.stop())
  await publishEdit(js, 'globex', 'plan', edit('globex plan v1 ', 61))
  await until('first committed', async () => (await contentOf('tenant = $1', 'globex')).length > 0, 20_000)
  const stall = await stallCommits('after')
  await publishEdit(js, 'globex', 'plan', edit('GLOBEX MERGER TERMS', 62))
  await stall.waiting()
  const removing = stack.provisioner.remove('globex', { actor: 'ops', reason: 'contract ended' })
  await new Promise((r) => setTimeout(r, 2_500))
  await stall.release()
  await removing
  await new Promise((r) => setTimeout(r, 1_000))
  t.same(await contentOf('tenant = $1', 'globex'), [], 'nothing of the removed tenant is stored')
  const clean = await aggJsm.streams.info(CLEAN_STREAM, { subjects_filter: cleanSubject('globex') })
  t.same(clean.state.subjects ?? {}, {}, 'nor any cleaned event of it, the held commit\'s included')
})

t.test("core - an erasure deletes the document's dead letters from the dead-letter stream, and no other's", async (t) => {
  const core = await stack.core()
  t.teardown(() => core.stop())
  const dlqDocs = async () => {
    const info = await aggJsm.streams.info(DLQ_STREAM)
    const docs: string[] = []
    for (let seq = info.state.first_seq; info.state.messages > 0 && seq <= info.state.last_seq; seq++) {
      const m = await aggJsm.streams.getMessage(DLQ_STREAM, { seq }).catch(() => null)
      if (m) docs.push(decodeDeadLetterEvent(m.data).docId!)
    }
    return docs.sort()
  }
  for (const docId of ['dlq-erased', 'dlq-kept']) {
    const { base, malformed } = malformedEdit()
    await publishEdit(js, 'acme', docId, base)
    await publishEdit(js, 'acme', docId, malformed)
  }
  await until('both dead letters on the stream', async () => (await dlqDocs()).length === 2)
  const report = await eraseDocument({ pool: stack.db, blobs, aggJsm, aggStream: AGG_STREAM, tenantJsm: null, notify }, { tenant: 'acme', docId: 'dlq-erased', actor: 'dpo@test', reason: 'GDPR' })
  t.match(report.streams.find((s) => s.stream === DLQ_STREAM), { removed: 1 }, 'reported')
  t.same(await dlqDocs(), ['dlq-kept'], "the other document's dead letter stays")
})

t.test('core - an erasure whose tenant dead letters leave the stream meanwhile still ends', async (t) => {
  const { base, malformed } = malformedEdit()
  const core = await stack.core()
  t.teardown(() => core.stop())
  const held = async () => Object.values((await aggJsm.streams.info(DLQ_STREAM, { subjects_filter: tenantDeadLetterSubjects('acme') })).state.subjects ?? {}).reduce((a, n) => a + n, 0)
  const before = await held()
  await publishEdit(js, 'acme', 'dlq-gone', base)
  await publishEdit(js, 'acme', 'dlq-gone', malformed)
  await until('its dead letter on the stream', async () => (await held()) === before + 1)
  // The tenant's dead letters go between the erasure's look at the stream and its read of them
  // (another erasure of the tenant, a purge, the stream's max age).
  const streams = new Proxy(aggJsm.streams, {
    get(target, prop, receiver) {
      if (prop !== 'info') return Reflect.get(target, prop, receiver)
      return async (name: string, opts?: Parameters<typeof target.info>[1]) => {
        const info = await target.info(name, opts)
        if (name === DLQ_STREAM) await target.purge(DLQ_STREAM, { filter: tenantDeadLetterSubjects('acme') })
        return info
      }
    },
  })
  const jsm = new Proxy(aggJsm, { get: (target, prop, receiver) => (prop === 'streams' ? streams : Reflect.get(target, prop, receiver)) })
  const report = await eraseDocument({ pool: stack.db, blobs, aggJsm: jsm, aggStream: AGG_STREAM, tenantJsm: null, notify }, { tenant: 'acme', docId: 'dlq-gone', actor: 'dpo@test', reason: 'GDPR' })
  t.match(report.streams.find((s) => s.stream === DLQ_STREAM), { removed: 0 }, 'it ended, with nothing left to delete')
})

t.test("core - an erasure's wait for commits in flight holds no commit up behind a long lock on the op log", async (t) => {
  const core = await stack.core()
  t.teardown(() => core.stop())
  await publishEdit(js, 'acme', 'vacuumed', edit('first', 71))
  await until('first committed', async () => (await contentOf("tenant = 'acme' AND doc_id = $1", 'vacuumed')).length > 0)
  // A vacuum's lock (SHARE UPDATE EXCLUSIVE) held for the whole erasure, and another erasure's open transaction.
  const vacuum = await stack.db.connect()
  await vacuum.query('BEGIN')
  await vacuum.query('LOCK TABLE op_log IN SHARE UPDATE EXCLUSIVE MODE')
  const other = await stack.db.connect()
  await other.query('BEGIN')
  await other.query("DELETE FROM op_log WHERE false") // holds the op log's write lock, as an erasure's transaction does
  const erasing = eraseDocument({ pool: stack.db, blobs, aggJsm, aggStream: AGG_STREAM, tenantJsm: null, notify }, { tenant: 'acme', docId: 'vacuumed', actor: 'dpo@test', reason: 'GDPR' })
  let done = false
  void erasing.then(() => (done = true), () => (done = true))
  await publishEdit(js, 'acme', 'meanwhile', edit('another document', 72))
  await until("another document's edit commits while the erasure waits", async () => (await contentOf("tenant = 'acme' AND doc_id = $1", 'meanwhile')).length > 0, 5_000)
  t.notOk(done, 'the erasure waits for the open write transaction')
  await other.query('ROLLBACK')
  other.release()
  await erasing
  t.pass('and ends once it ended')
  await vacuum.query('ROLLBACK')
  vacuum.release()
})
