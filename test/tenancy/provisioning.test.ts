import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { AGG_STREAM, CloseCode, ServiceUser, TENANTS_BUCKET, TenantStatus, tenantEditSubjects } from '../../contracts/mod.ts'
import { natsFiles } from '../../scripts/lib/nats-server.ts'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'
import { edit, publishEdit } from '../helpers/edits.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()
const edge = await stack.edge()

const materialized = async (tenant: string, docId: string) => materializedText(core.url, docId, await token({ tenant }))

t.test('tenancy - adding a tenant at runtime keeps every existing connection', async (t) => {
  const acme = yclient(edge.url, 'live', await token({ tenant: 'acme' }))
  t.teardown(() => acme.destroy())
  await acme.synced()
  let wsCloses = 0
  acme.provider.on('connection-close', () => wsCloses++)
  const nc = await stack.connect(ServiceUser.Edge)
  const statuses: string[] = []
  void (async () => {
    for await (const s of nc.status()) statuses.push(s.type)
  })()

  await stack.provisioner.add('initech', 32 * 1024 ** 2)

  acme.text.insert(0, 'still here')
  await until('acme edit after the reload is materialized', async () => (await materialized('acme', 'live')) === 'still here')
  const initech = yclient(edge.url, 'live', await token({ tenant: 'initech' }))
  t.teardown(() => initech.destroy())
  await initech.synced()
  initech.text.insert(0, 'new tenant')
  await until('the new tenant works end to end', async () => (await materialized('initech', 'live')) === 'new tenant')
  t.equal(wsCloses, 0, 'the WebSocket was never closed')
  t.notOk(statuses.some((s) => s === 'disconnect' || s === 'reconnect'), `no NATS reconnect (saw ${statuses.join(',') || 'nothing'})`)
})

t.test('tenancy - suspend closes live sockets with 4403 and refuses new ones; resume restores', async (t) => {
  const tok = await token({ tenant: 'globex' })
  const c = yclient(edge.url, 'sus', tok)
  t.teardown(() => c.destroy())
  await c.synced()
  const closed = c.nextClose()
  await stack.provisioner.setStatus('globex', TenantStatus.Suspended)
  const close = await closed
  t.equal(close.code, CloseCode.Forbidden)
  t.match(close.reason, /suspended/)
  const again = yclient(edge.url, 'sus', tok)
  t.teardown(() => again.destroy())
  t.match((await again.nextClose()).reason, /suspended/, 'a new socket is refused')
  await t.rejects(publishEdit(jetstream(await stack.connect(ServiceUser.Edge)), 'globex', 'sus', edit('x', 5)), 'nothing can write for a suspended tenant')
  await stack.provisioner.setStatus('globex', TenantStatus.Active)
  const back = yclient(edge.url, 'sus', tok)
  t.teardown(() => back.destroy())
  await back.synced()
  back.text.insert(0, 'resumed')
  await until('writes flow again', async () => (await materialized('globex', 'sus')) === 'resumed')
})

t.test('tenancy - remove purges the tenant from its stream, AGG, KV and PostgreSQL', async (t) => {
  const js = jetstream(await stack.connect(ServiceUser.Edge))
  for (let i = 0; i < 5; i++) await publishEdit(js, 'initech', `doc-${i}`, edit(`gone ${i}`, 10 + i))
  await until('initech docs materialized', async () => (await stack.db.query("SELECT count(*)::int AS n FROM docs WHERE tenant = 'initech'")).rows[0].n === 6)
  await stack.provisioner.remove('initech')
  const jsm = await jetstreamManager(await stack.connect(ServiceUser.Admin))
  const agg = await jsm.streams.info(AGG_STREAM, { subjects_filter: tenantEditSubjects('initech') })
  t.same(agg.state.subjects ?? {}, {}, 'no initech message left in AGG')
  for (const table of ['docs', 'op_log', 'dead_letters']) {
    t.equal((await stack.db.query(`SELECT count(*)::int AS n FROM ${table} WHERE tenant = 'initech'`)).rows[0].n, 0, `no initech rows in ${table}`)
  }
  const kv = await new Kvm(await stack.connect(ServiceUser.Admin)).open(TENANTS_BUCKET)
  const entry = await kv.get('initech')
  t.not(entry?.operation, 'PUT', 'no tenant record')
  await t.rejects(publishEdit(js, 'initech', 'doc-0', edit('again', 99)), 'the ingest path is gone')
  t.equal((await stack.provisioner.list()).map((r) => r.tenant).join(','), 'acme,globex')
  const closed = yclient(edge.url, 'x', await token({ tenant: 'initech' }))
  t.teardown(() => closed.destroy())
  // Refused as removed, or as revoked when minted in the second removal revoked its tokens.
  t.match((await closed.nextClose()).reason, /was removed|token revoked/, 'its tokens no longer open sockets')
})

t.test('tenancy - unknown tenants are refused unless dev auto-provisioning is on', async (t) => {
  const off = yclient(edge.url, 'd', await token({ tenant: 'hooli' }))
  t.teardown(() => off.destroy())
  const close = await off.nextClose()
  t.equal(close.code, CloseCode.Forbidden)
  t.match(close.reason, /not provisioned/)

  const sub = stack.provisioner.serveAutoProvisioning(16 * 1024 ** 2, (err) => t.fail(String(err)))
  t.teardown(() => sub.unsubscribe())
  const devEdge = await stack.edge({ autoProvisionTenants: true })
  const on = yclient(devEdge.url, 'd', await token({ tenant: 'piedpiper' }))
  t.teardown(() => on.destroy())
  await on.synced()
  on.text.insert(0, 'made on first sight')
  await until('auto-provisioned tenant works', async () => (await materialized('piedpiper', 'd')) === 'made on first sight')
})

t.test('tenancy - an add whose reload fails leaves the registry and the config as they were, and the next add works', async (t) => {
  const files = natsFiles(join(stack.dir, 'nats'))
  const [registry, config, pid] = [files.registry, files.config, files.pid].map((f) => readFileSync(f, 'utf8'))
  // A pid no process has: the reload fails, as it does when nats-server refuses the new config.
  writeFileSync(files.pid, '999999999\n')
  try {
    await t.rejects(stack.provisioner.add('umbrella', 16 * 1024 ** 2), /not running/)
  } finally {
    writeFileSync(files.pid, pid!)
  }
  t.equal(readFileSync(files.registry, 'utf8'), registry, 'the registry is as it was')
  t.equal(readFileSync(files.config, 'utf8'), config, 'so is the config nats-server would start with')
  await stack.provisioner.add('initech', 16 * 1024 ** 2)
  t.ok((await stack.provisioner.list()).some((r) => r.tenant === 'initech'), 'provisioning goes on')
})

t.test("tenancy - removing a tenant revokes its tokens: a tenant added later under the name refuses them", async (t) => {
  const old = await token({ tenant: 'globex', sub: 'former-admin' })
  await stack.provisioner.remove('globex')
  const removed = Date.now()
  await stack.provisioner.add('globex', 16 * 1024 ** 2) // the name given to a new customer
  // Tokens are revoked by issue second: the new tenant's come a second after the removal.
  await sleep(removed + 1_000 - Date.now())
  const fresh = yclient(edge.url, 'reused', await token({ tenant: 'globex' }))
  t.teardown(() => fresh.destroy())
  await fresh.synced()
  const stale = yclient(edge.url, 'reused', old)
  t.teardown(() => stale.destroy())
  const outcome = await Promise.race([stale.synced().then(() => 'synced'), stale.nextClose().then((c) => `${c.code} ${c.reason}`)])
  t.equal(outcome, `${CloseCode.Unauthorized} token revoked`, "the removed tenant's token is refused")
})
