import t from 'tap'
import { AckPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream'
import { AGG_STREAM, ServiceUser, editStoredSubject, encodeEnvelope, tenantSourceDeliver, tenantStreamName } from '../../contracts/mod.ts'
import { setup } from '../helpers/setup.ts'
import { edit, publishEdit } from '../helpers/edits.ts'
import { until } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())

t.test('tenancy - the service user publishes to both tenants and gets each stream ack', async (t) => {
  const js = jetstream(await stack.connect(ServiceUser.Edge))
  const a = await publishEdit(js, 'acme', 'doc', edit('a', 1))
  const g = await publishEdit(js, 'globex', 'doc', edit('g', 2))
  t.equal(a.stream, tenantStreamName('acme'))
  t.equal(g.stream, tenantStreamName('globex'))
})

t.test('tenancy - a tenant user cannot publish to, subscribe to or read another tenant', async (t) => {
  const acme = await stack.connect({ tenant: 'acme', kind: 'app' })
  const received: string[] = []
  acme.subscribe('>', {
    callback: (_e, m) => {
      received.push(m.subject)
    },
  })
  await acme.flush()

  await t.rejects(acme.request('ten.globex.ed.doc', new Uint8Array([1]), { timeout: 1_000 }), 'publishing into globex reaches nobody')
  await t.rejects(jetstream(acme).publish('ten.globex.ed.doc', new Uint8Array([1]), { timeout: 1_000 }))

  const svc = jetstream(await stack.connect(ServiceUser.Edge))
  await publishEdit(svc, 'globex', 'secret-doc', edit('globex secret', 3))
  // Positive signal that the server went past the globex publish (acked above): an acme edit
  // published after it reaches acme's wildcard subscription.
  await publishEdit(svc, 'acme', 'marker', edit('acme marker', 4))
  await until("acme's own edit arrives", () => received.some((s) => s.startsWith('ten.acme.ed.')))
  t.same(received.filter((s) => s.includes('globex')), [], 'a wildcard subscription sees nothing of globex')

  const jsm = await jetstreamManager(acme)
  await t.rejects(jsm.streams.info(tenantStreamName('globex')), /not found/, "globex's stream does not exist for acme")
  const names: string[] = []
  for await (const s of jsm.streams.names()) names.push(s)
  t.same(names, [tenantStreamName('acme')], 'acme lists only its own stream')
})

t.test('tenancy - a tenant user reads its own stream but cannot write, purge, edit or delete it', async (t) => {
  const acme = await stack.connect({ tenant: 'acme', kind: 'app' })
  const jsm = await jetstreamManager(acme)
  const info = await jsm.streams.info(tenantStreamName('acme'))
  t.ok(info.state.messages >= 1, 'can read its stream')
  const stored = info.state.messages
  // The server drops a denied publish (an async permissions error), so the publish times out.
  await t.rejects(jetstream(acme).publish('ten.acme.ed.doc', new Uint8Array([1]), { timeout: 1_000 }), /timeout/i, 'direct writes go through the edge only')
  await t.rejects(jsm.streams.purge(tenantStreamName('acme')), /permission/i, 'cannot purge')
  await t.rejects(jsm.streams.delete(tenantStreamName('acme')), /permission/i, 'cannot delete')
  await t.rejects(jsm.streams.update(tenantStreamName('acme'), { max_age: 1_000_000_000 }), /permission/i, 'cannot edit')
  t.equal((await jsm.streams.info(tenantStreamName('acme'))).state.messages, stored, 'stream untouched')
})

t.test("tenancy - a tenant user cannot create or delete consumers, so AGG keeps sourcing its stream", async (t) => {
  const acme = await stack.connect({ tenant: 'acme', kind: 'app' })
  const jsm = await jetstreamManager(acme)
  const stream = tenantStreamName('acme')
  const svc = jetstream(await stack.connect(ServiceUser.Edge))
  // AGG's source consumer is not listed; its deliveries to AGG name it ($JS.ACK.<stream>.<consumer>...).
  const consumer = new Promise<string>((resolve) => {
    const sub = acme.subscribe(`${tenantSourceDeliver('acme')}.>`, {
      callback: (_e, m) => {
        if (!m.reply?.startsWith('$JS.ACK.')) return
        sub.unsubscribe()
        resolve(m.reply.split('.')[3]!)
      },
    })
  })
  await acme.flush()
  await publishEdit(svc, 'acme', 'source-probe', edit('probe', 5))
  const source = await consumer
  const consumers = (await jsm.streams.info(stream)).state.consumer_count

  await t.rejects(jsm.consumers.delete(stream, source), /permission/i, "cannot delete AGG's source consumer")
  await t.rejects(jsm.consumers.add(stream, { durable_name: 'hog', ack_policy: AckPolicy.None }), /permission/i, 'cannot take a consumer slot (durable)')
  await t.rejects(jsm.consumers.add(stream, { ack_policy: AckPolicy.None }), /permission/i, 'nor an ephemeral one')
  t.ok(await jsm.consumers.info(stream, source), "AGG's source consumer is still there")
  t.equal((await jsm.streams.info(stream)).state.consumer_count, consumers, 'no consumer was added')
  t.ok(await jsm.streams.getMessage(stream, { seq: 1 }), 'it still reads its stream by sequence')

  await publishEdit(svc, 'acme', 'after-attempts', edit('still sourced', 6))
  const admin = await jetstreamManager(await stack.connect(ServiceUser.Admin))
  await until('the edit reaches AGG', async () => Object.keys((await admin.streams.info(AGG_STREAM, { subjects_filter: 'ten.acme.ed.*.after-attempts' })).state.subjects ?? {}).length === 1)
})

t.test("tenancy - a tenant admin who gives its stream another tenant's subjects writes nothing of that tenant's", async (t) => {
  const core = await stack.core()
  t.teardown(() => core.stop())
  const admin = await stack.connect({ tenant: 'acme', kind: 'admin' })
  const jsm = await jetstreamManager(admin)
  const stream = tenantStreamName('acme')
  const config = (await jsm.streams.info(stream)).config
  await jsm.streams.update(stream, { ...config, subjects: [...config.subjects, 'ten.globex.ed.>'] })
  t.teardown(() => jsm.streams.update(stream, config))
  const forged = await jetstream(admin).publish(editStoredSubject('globex', 0, 'roadmap'), encodeEnvelope({ v: 1, tenant: 'globex', docId: 'roadmap', userId: 'g-user', update: edit('INJECTED', 666), ingestTs: Date.now(), edgeId: 'x' }))
  t.equal(forged.stream, stream, "stored in acme's own stream, which AGG sources")
  const dead = async () => (await stack.db.query("SELECT reason FROM dead_letters WHERE tenant = 'globex'")).rows.map((r) => r.reason as string)
  await until('core refused it', async () => (await dead()).length > 0)
  t.match(await dead(), [/^decode: not from tenant globex's stream \(Nats-Stream-Source: EDITS_acme/])
  t.equal((await stack.db.query("SELECT count(*)::int AS n FROM op_log WHERE tenant = 'globex' AND doc_id = 'roadmap'")).rows[0].n, 0, 'nothing in its op log')
})
