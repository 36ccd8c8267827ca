// A room's first state comes from core, or from a room on another edge while core is slow or
// away; fan-outs of peers can come before it.
import t from 'tap'
import { ServiceSubjects, ServiceUser } from '../../contracts/mod.ts'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const edgeA = await stack.edge()
const edgeB = await stack.edge({ stateTimeoutMs: 3_000 })

t.test("edge - a peer's fan-out that comes while a room loads reaches the room's first joiners, who join empty", async (t) => {
  const tok = await token({ tenant: 'acme' })
  const core = await stack.core()
  const a = yclient(edgeA.url, 'load-race', tok)
  t.teardown(() => a.destroy())
  await a.synced()
  a.text.insert(0, 'hello')
  await until('materialized', async () => (await materializedText(core.url, 'load-race', tok)) === 'hello')
  // Core paused: its subject is held, nothing answers (a subscriber that never replies).
  await core.stop()
  const nc = await stack.connect(ServiceUser.Core)
  let asked = 0
  nc.subscribe(ServiceSubjects.coreState, { callback: () => void asked++ })
  await nc.flush()

  const b = yclient(edgeB.url, 'load-race', tok)
  t.teardown(() => b.destroy())
  await until("B's room asked core", () => asked > 0)
  a.text.insert(5, ' world') // fanned out to B's room while it waits for core
  await b.synced()
  await until('the client on B has it', () => b.text.toString() === 'hello world')
  a.text.insert(11, '!')
  await until('and what builds on it', () => b.text.toString() === 'hello world!')
})
