import t from 'tap'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, readState, until, yclient } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()
const edge = await stack.edge()

t.test('core - the same doc id in two tenants stays apart (socket and read API)', async (t) => {
  const acme = await token({ tenant: 'acme' })
  const globex = await token({ tenant: 'globex' })
  const a = yclient(edge.url, 'roadmap', acme)
  const g = yclient(edge.url, 'roadmap', globex)
  t.teardown(() => (a.destroy(), g.destroy()))
  await Promise.all([a.synced(), g.synced()])
  a.text.insert(0, 'acme secret')
  g.text.insert(0, 'globex plan')
  for (const [tok, want] of [
    [acme, 'acme secret'],
    [globex, 'globex plan'],
  ] as const) {
    await until(`read API shows ${want}`, async () => (await materializedText(core.url, 'roadmap', tok)) === want)
  }
  t.equal(a.text.toString(), 'acme secret', 'acme socket never got globex edits')
  t.equal(g.text.toString(), 'globex plan', 'globex socket never got acme edits')
  const initech = await token({ tenant: 'initech' })
  t.equal(await readState(core.url, 'roadmap', initech), 404, 'a third tenant has no such document')
})
