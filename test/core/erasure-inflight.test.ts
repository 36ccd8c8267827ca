// A commit in flight while a document is erased, or a tenant removed, must not write the erased
// content back (migration 011: the commit's fence, and the erasure's wait for commits in flight).
import t from 'tap'
import { join } from 'node:path'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { AGG_STREAM, DLQ_STREAM, ServiceSubjects, ServiceUser, decodeDeadLetterEvent, encodeDocNotice, type DocNotice } from '../../contracts/mod.ts'
import { FsBlobStore } from '../../runtime/blobs/fs-store.ts'
import { eraseDocument } from '../../core/erasure.ts'
import { edit, malformedEdit, publishEdit } from '../helpers/edits.ts'
import { setup } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const js = jetstream(await stack.connect())
const admin = await stack.connect(ServiceUser.Admin)
const aggJsm = await jetstreamManager(admin)
const notify = async (notice: DocNotice) => {
  admin.publish(ServiceSubjects.docNotice, encodeDocNotice(notice))
  await admin.flush()
}
const blobs = await FsBlobStore.open(join(stack.dir, 'blobs'))

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
