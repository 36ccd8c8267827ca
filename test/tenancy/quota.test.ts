import t from 'tap'
import { CloseCode } from '../../contracts/mod.ts'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'

const stack = await setup({ tenants: { tiny: 128 * 1024, acme: 64 * 1024 ** 2 } })
t.teardown(() => stack.cleanup())
const core = await stack.core()
const edge = await stack.edge()

const materialized = async (tenant: string, docId: string) => materializedText(core.url, docId, await token({ tenant }))

t.test('tenancy - a tenant over its quota fails alone, with 4507, and loses nothing once raised', async (t) => {
  const tiny = yclient(edge.url, 'big-doc', await token({ tenant: 'tiny' }))
  const acme = yclient(edge.url, 'big-doc', await token({ tenant: 'acme' }))
  t.teardown(() => (tiny.destroy(), acme.destroy()))
  await Promise.all([tiny.synced(), acme.synced()])

  const closed = tiny.nextClose()
  const chunk = 'x'.repeat(4_096)
  let refused: { code: number; reason: string } | null = null
  void closed.then((c) => (refused = c))
  for (let i = 0; i < 80 && !refused; i++) {
    tiny.text.insert(tiny.text.length, chunk)
    acme.text.insert(acme.text.length, `${i},`)
    await new Promise((r) => setTimeout(r, 20))
  }
  const close = await closed
  t.equal(close.code, CloseCode.QuotaExceeded, 'the writing client gets the named close code')
  t.match(close.reason, /quota/)

  const acmeText = acme.text.toString()
  await until('acme keeps working while tiny is over quota', async () => (await materialized('acme', 'big-doc')) === acmeText)
  const metrics = await edge.edge.metrics.registry.metrics()
  t.match(metrics, /docflow_edge_quota_rejections_total\{tenant="tiny"[^}]*\} [1-9]/, 'a metric names the tenant')

  const typed = tiny.text.toString()
  t.not(await materialized('tiny', 'big-doc'), typed, 'not everything tiny typed is stored yet')
  await stack.provisioner.setQuota('tiny', 16 * 1024 ** 2)
  await until('after the quota is raised the client resyncs and every character lands', async () => (await materialized('tiny', 'big-doc')) === typed, 30_000)
  t.equal(tiny.text.toString(), typed)
})
