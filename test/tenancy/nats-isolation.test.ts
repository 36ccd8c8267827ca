import t from 'tap'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { ServiceUser, tenantStreamName } from '../../contracts/mod.ts'
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
