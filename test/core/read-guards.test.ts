import t from 'tap'
import { TenantStatus } from '../../contracts/mod.ts'
import { setup, token } from '../helpers/setup.ts'
import { readState, until } from '../helpers/client.ts'
import { edit, publishEdit } from '../helpers/edits.ts'
import { jetstream } from '@nats-io/jetstream'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()

t.test('core - /metrics is served on the ops port only; /healthz on both', async (t) => {
  t.equal((await fetch(`${core.url}/metrics`)).status, 404, 'no metrics on the public read API port')
  const ops = await fetch(`${core.opsUrl}/metrics`)
  t.equal(ops.status, 200)
  t.match(await ops.text(), /docflow_core_leases_held/)
  t.equal((await fetch(`${core.url}/healthz`)).status, 200)
  t.equal((await fetch(`${core.opsUrl}/healthz`)).status, 200)
})

t.test('core - a suspended tenant gets 403 from the read API; resumed, 200 again', async (t) => {
  await publishEdit(jetstream(await stack.connect()), 'globex', 'kept', edit('kept', 7))
  const tok = await token({ tenant: 'globex' })
  await until('materialized', async () => (await readState(core.url, 'kept', tok)) !== 404)
  t.not(await readState(core.url, 'kept', tok), 403, 'active tenant reads')
  await stack.provisioner.setStatus('globex', TenantStatus.Suspended)
  await until('suspension seen by core', async () => (await readState(core.url, 'kept', tok)) === 403)
  t.equal(await readState(core.url, 'kept', await token({ tenant: 'acme' })), 404, 'another tenant is unaffected')
  await stack.provisioner.setStatus('globex', TenantStatus.Active)
  await until('resume seen by core', async () => typeof (await readState(core.url, 'kept', tok)) === 'object')
  t.pass('resumed tenant reads its document again')
})

t.test('core - a removed tenant\'s tokens are refused by the read API (the removal revokes them)', async (t) => {
  await stack.provisioner.add('initech', 16 * 1024 ** 2)
  const tok = await token({ tenant: 'initech' })
  await until('new tenant seen', async () => (await readState(core.url, 'none', tok)) === 404)
  await stack.provisioner.remove('initech')
  await until('removal seen by core', async () => (await readState(core.url, 'none', tok)) === 401)
  await new Promise((resolve) => setTimeout(resolve, 1_100)) // revocations cover tokens issued up to their second
  t.equal(await readState(core.url, 'none', await token({ tenant: 'initech' })), 403, 'a token issued after the removal: the tenant is removed')
})

t.test('core - a revoked token gets 401 from the read API; another user of the tenant still reads', async (t) => {
  await publishEdit(jetstream(await stack.connect()), 'acme', 'minutes', edit('board minutes', 8))
  const alice = await token({ tenant: 'acme', sub: 'alice' })
  const bob = await token({ tenant: 'acme', sub: 'bob' })
  await until('materialized', async () => typeof (await readState(core.url, 'minutes', alice)) === 'object')
  await stack.provisioner.revoke({ tenant: 'acme', userId: 'alice', reason: 'laptop stolen' })
  await until('revocation seen by core', async () => (await readState(core.url, 'minutes', alice)) === 401)
  for (const view of ['history', 'blame']) {
    const res = await fetch(`${core.url}/v1/docs/minutes/${view}`, { headers: { authorization: `Bearer ${alice}` } })
    t.same([res.status, await res.json()], [401, { error: 'token revoked' }], `${view} refused`)
  }
  t.equal(typeof (await readState(core.url, 'minutes', bob)), 'object', 'bob still reads')
})
