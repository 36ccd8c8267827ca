import t from 'tap'
import { CloseCode } from '../../contracts/mod.ts'
import { JWT_SECRET, setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'
import { counterValue } from '../helpers/metric-value.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()
const edge = await stack.edge()

async function closeCodeFor(tok: string, docId = 'doc-1') {
  const c = yclient(edge.url, docId, tok)
  try {
    return await c.nextClose()
  } finally {
    c.destroy()
  }
}

t.test('edge - a token signed with another secret is refused with 4401', async (t) => {
  const forged = await token({ tenant: 'acme' }, 3_600, 'not-the-server-secret-xxxxxxxx')
  t.equal((await closeCodeFor(forged)).code, CloseCode.Unauthorized)
})

t.test('edge - an expired token is refused with 4401 and says so', async (t) => {
  const expired = await token({ tenant: 'acme' }, -60)
  const close = await closeCodeFor(expired)
  t.equal(close.code, CloseCode.Unauthorized)
  t.match(close.reason, /expired/)
})

t.test('edge - a token living longer than revocations are kept is refused with 4401 and says so', async (t) => {
  const c = yclient(edge.url, 'doc-1', await token({ tenant: 'acme' }, 365 * 86_400))
  t.teardown(() => c.destroy())
  const close = await Promise.race([c.nextClose(), c.synced().then(() => ({ code: 0, reason: 'synced: the token was accepted' }))])
  t.equal(close.code, CloseCode.Unauthorized, close.reason)
  t.match(close.reason, /lives too long/)
})

t.test('edge - a missing or garbage token is refused with 4401', async (t) => {
  t.equal((await closeCodeFor('')).code, CloseCode.Unauthorized)
  t.equal((await closeCodeFor('not.a.jwt')).code, CloseCode.Unauthorized)
})

t.test('edge - a token with bad claims is refused with 4401', async (t) => {
  const badTenant = await token({ tenant: 'Not A Tenant!' })
  t.equal((await closeCodeFor(badTenant)).code, CloseCode.Unauthorized)
})

t.test('edge - a doc outside the token patterns is refused with 4403', async (t) => {
  const narrow = await token({ tenant: 'acme', docs: ['team-a/*'] })
  t.equal((await closeCodeFor(narrow, 'team-b/plan')).code, CloseCode.Forbidden)
  const ok = yclient(edge.url, 'team-a/plan', narrow)
  t.teardown(() => ok.destroy())
  await ok.synced()
  t.ok(ok.provider.wsconnected, 'a matching doc connects')
})

t.test('edge - the client stops reconnecting after a 44xx refusal', async (t) => {
  const c = yclient(edge.url, 'doc-1', await token({ tenant: 'acme' }, -60))
  t.teardown(() => c.destroy())
  const closed = await new Promise<{ code: number }>((resolve) => c.provider.once('closed', resolve as never))
  t.equal(closed.code, CloseCode.Unauthorized)
  t.equal(c.provider.shouldConnect, false)
})

t.test('edge - a live socket is closed with 4401 when its token expires; what it typed is kept', async (t) => {
  const strict = await stack.edge({ tokens: { secret: JWT_SECRET, clockToleranceS: 0 } })
  const c = yclient(strict.url, 'expiring', await token({ tenant: 'acme' }, 3))
  t.teardown(() => c.destroy())
  await c.synced()
  const openedAt = Date.now()
  c.text.insert(0, 'typed before expiry')
  const closed = await c.nextClose()
  t.equal(closed.code, CloseCode.Unauthorized)
  t.match(closed.reason, /token expired/)
  t.ok(Date.now() - openedAt >= 1_000, `open until its exp (${Date.now() - openedAt} ms after the first edit)`)
  t.equal(c.provider.shouldConnect, false, 'a stock client stops reconnecting: the app brings a fresh token')
  t.equal(await counterValue(strict.edge.metrics.tokenExpiries, { tenant: 'acme' }), 1)
  const fresh = await token({ tenant: 'acme' })
  await until('the edit typed before expiry is materialized', async () => (await materializedText(core.url, 'expiring', fresh).catch(() => null)) === 'typed before expiry')
})
