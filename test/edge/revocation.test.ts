import t from 'tap'
import { CloseCode } from '../../contracts/mod.ts'
import { setup, token } from '../helpers/setup.ts'
import { until, yclient, type TestClient } from '../helpers/client.ts'
import { counterValue } from '../helpers/metric-value.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
await stack.core()
const a = await stack.edge()
const b = await stack.edge()

async function connected(edgeUrl: string, docId: string, tok: string): Promise<TestClient> {
  const c = yclient(edgeUrl, docId, tok)
  t.teardown(() => c.destroy())
  await c.synced()
  return c
}

/** Resolves with the close and how long after `since` it came. */
const closeOf = (c: TestClient, since: () => number) => c.nextClose().then((close) => ({ ...close, afterMs: Date.now() - since() }))

t.test('edge - revoking a user closes its sockets on every edge within 1 s and refuses its old tokens; others stay', async (t) => {
  const aliceOld = await token({ tenant: 'acme', sub: 'alice' })
  const bobTok = await token({ tenant: 'acme', sub: 'bob' })
  const aliceHere = await connected(a.url, 'shared', aliceOld)
  const aliceThere = await connected(b.url, 'elsewhere', aliceOld)
  const bob = await connected(a.url, 'shared', bobTok)
  let revokedAt = 0
  const closes = Promise.all([closeOf(aliceHere, () => revokedAt), closeOf(aliceThere, () => revokedAt)])
  revokedAt = Date.now()
  await stack.provisioner.revoke({ tenant: 'acme', userId: 'alice', reason: 'laptop stolen' })
  for (const close of await closes) {
    t.equal(close.code, CloseCode.Unauthorized)
    t.match(close.reason, /token revoked/)
    t.ok(close.afterMs < 1_000, `closed ${close.afterMs} ms after the revocation`)
  }
  t.equal(aliceHere.provider.shouldConnect, false, 'a stock client stops reconnecting')
  t.equal((await counterValue(a.edge.metrics.revokedSockets, { tenant: 'acme' })) + (await counterValue(b.edge.metrics.revokedSockets, { tenant: 'acme' })), 2)

  bob.text.insert(0, 'bob still edits')
  const bobReader = await connected(b.url, 'shared', bobTok)
  await until('bob, not revoked, still edits and syncs', () => bobReader.text.toString() === 'bob still edits')
  t.ok(bob.provider.wsconnected, "bob's socket stayed open")

  const again = yclient(a.url, 'shared', aliceOld)
  t.teardown(() => again.destroy())
  const refused = await again.nextClose()
  t.same(refused, { code: CloseCode.Unauthorized, reason: 'token revoked' }, 'the old token is refused on reconnect')
  const post = await fetch(`${a.url.replace('ws:', 'http:')}/v1/docs/shared/updates`, { method: 'POST', body: new Uint8Array([0, 0]), headers: { authorization: `Bearer ${aliceOld}`, 'idempotency-key': 'k' } })
  t.equal(post.status, 401, 'and over HTTP')
  await new Promise((r) => setTimeout(r, 1_100)) // iat has a resolution of one second
  await connected(a.url, 'shared', await token({ tenant: 'acme', sub: 'alice' }))
  t.pass('a token issued after the revocation connects')
})

t.test('edge - revoking one token id closes only that token; a tenant-wide revocation closes only that tenant', async (t) => {
  const phone = await connected(b.url, 'doc-x', await token({ tenant: 'acme', sub: 'carol', jti: 'carol-phone' }))
  const laptop = await connected(a.url, 'doc-x', await token({ tenant: 'acme', sub: 'carol', jti: 'carol-laptop' }))
  const phoneClosed = phone.nextClose()
  await stack.provisioner.revoke({ tenant: 'acme', tokenId: 'carol-phone' })
  t.same(await phoneClosed, { code: CloseCode.Unauthorized, reason: 'token revoked' })
  const globex = await connected(a.url, 'doc-x', await token({ tenant: 'globex', sub: 'dave' }))
  const globexClosed = globex.nextClose()
  await stack.provisioner.revoke({ tenant: 'globex' })
  t.same(await globexClosed, { code: CloseCode.Unauthorized, reason: 'token revoked' })
  await new Promise((r) => setTimeout(r, 300))
  t.ok(laptop.provider.wsconnected, "carol's other token and acme's sockets stay")
})
