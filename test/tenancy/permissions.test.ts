import t from 'tap'
import { jetstream, jetstreamManager, AckPolicy } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { AGG_STREAM, ServiceSubjects, ServiceUser, TENANTS_BUCKET, coreConsumerName, editStoredSubject, encodeTenantRecord, serviceInboxPrefix } from '../../contracts/mod.ts'
import { requestState } from '../../runtime/state-transfer.ts'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'
import { edit, publishEdit } from '../helpers/edits.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()
const edge = await stack.edge()

const PERMISSION = /permission/i

t.test('tenancy - the edge and core work with their NATS permissions (a stock client syncs and its edits materialize)', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const a = yclient(edge.url, 'perm-doc', tok)
  const b = yclient(edge.url, 'perm-doc', tok)
  t.teardown(() => (a.destroy(), b.destroy()))
  await Promise.all([a.synced(), b.synced()])
  a.text.insert(0, 'least privilege')
  await until('the other client sees the edit', () => b.text.toString() === 'least privilege')
  await until('materialized', async () => (await materializedText(core.url, 'perm-doc', tok)) === 'least privilege')
  const late = yclient(edge.url, 'perm-doc', tok)
  t.teardown(() => late.destroy())
  await late.synced()
  t.equal(late.text.toString(), 'least privilege', 'a new client gets the document')
})

t.test("tenancy - the edge's NATS user cannot delete or purge AGG, touch its consumers, or write the tenant bucket", async (t) => {
  const nc = await stack.connect(ServiceUser.Edge)
  const jsm = await jetstreamManager(nc)
  await t.rejects(jsm.streams.delete(AGG_STREAM), PERMISSION, 'cannot delete AGG')
  await t.rejects(jsm.streams.purge(AGG_STREAM), PERMISSION, 'cannot purge AGG')
  await t.rejects(jsm.streams.update(AGG_STREAM, { max_age: 1_000_000_000 }), PERMISSION, 'cannot edit AGG')
  await t.rejects(jsm.consumers.delete(AGG_STREAM, coreConsumerName(0)), PERMISSION, "cannot delete core's consumer")
  await t.rejects(jsm.consumers.add(AGG_STREAM, { durable_name: 'evil', ack_policy: AckPolicy.Explicit }), PERMISSION, 'cannot create a consumer on AGG')
  await t.rejects(jsm.streams.delete(`KV_${TENANTS_BUCKET}`), PERMISSION, 'cannot delete the tenant bucket')

  const kv = await new Kvm(nc).open(TENANTS_BUCKET)
  const record = await kv.get('acme')
  t.ok(record?.value.length, 'reads the tenant bucket')
  await t.rejects(kv.put('acme', encodeTenantRecord({ tenant: 'acme', status: 'suspended', maxStorageBytes: 1, createdAt: new Date().toISOString() })), PERMISSION, 'cannot rewrite a tenant')
  await t.rejects(kv.delete('acme'), PERMISSION, 'cannot delete a tenant')
  await t.rejects(kv.purge('acme'), PERMISSION, 'cannot purge a tenant')
  await t.rejects(jetstream(nc).publish(editStoredSubject('acme', 3, 'forged'), edit('x', 9), { timeout: 2_000 }), PERMISSION, 'cannot choose the partition (stored subjects)')
  t.same((await kv.get('acme'))?.value, record?.value, 'the record is untouched')

  const admin = await jetstreamManager(await stack.connect(ServiceUser.Admin))
  t.ok(await admin.consumers.info(AGG_STREAM, coreConsumerName(0)), "core's consumer is still there")
  await t.rejects(admin.consumers.info(AGG_STREAM, 'evil'), /not found/, 'no consumer was created')
})

t.test("tenancy - core's NATS user cannot publish edits or write the tenant bucket", async (t) => {
  const nc = await stack.connect(ServiceUser.Core)
  await t.rejects(publishEdit(jetstream(nc), 'acme', 'from-core', edit('x', 10)), PERMISSION, 'cannot publish to an ingest subject')
  const kv = await new Kvm(nc).open(TENANTS_BUCKET)
  t.ok(await kv.get('acme'), 'reads the tenant bucket')
  await t.rejects(kv.put('globex', new Uint8Array([1])), PERMISSION, 'cannot write a tenant')
  await t.rejects(kv.delete('globex'), PERMISSION, 'cannot delete a tenant')
  const jsm = await jetstreamManager(nc)
  await t.rejects(jsm.streams.delete(AGG_STREAM), PERMISSION, 'cannot delete AGG')
  await t.rejects(jsm.streams.purge(AGG_STREAM), PERMISSION, 'cannot purge AGG')
})

t.test("tenancy - the edge's NATS user can neither read nor forge replies on core's inboxes", async (t) => {
  const nc = await stack.connect(ServiceUser.Edge)
  const violations: string[] = []
  void (async () => {
    for await (const s of nc.status()) if (s.type === 'error') violations.push(String(s.error))
  })()
  const coreInbox = `${serviceInboxPrefix(ServiceUser.Core)}.>`
  nc.subscribe(coreInbox)
  nc.subscribe('_INBOX.>')
  nc.publish(`${serviceInboxPrefix(ServiceUser.Core)}.forged`, new Uint8Array([1]))
  await until('three violations reported', () => violations.length >= 3)
  t.ok(violations.some((v) => PERMISSION.test(v) && v.includes('Subscription') && v.includes(coreInbox)), `cannot subscribe to core's inboxes (${violations.join('; ')})`)
  t.ok(violations.some((v) => PERMISSION.test(v) && v.includes('Subscription') && v.includes('_INBOX.>')), 'cannot subscribe to every inbox')
  t.ok(violations.some((v) => PERMISSION.test(v) && v.includes('Publish') && v.includes('.forged')), "cannot publish into core's inboxes")
  // Its own inbox still works: a state request is answered.
  const reply = await requestState(nc, ServiceSubjects.coreState, { tenant: 'acme', docId: 'perm-doc' }, 5_000)
  t.equal(reply?.status, 'found', 'requests on its own inbox are answered')
})
