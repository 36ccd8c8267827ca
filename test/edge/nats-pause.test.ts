import t from 'tap'
import { setup, token } from '../helpers/setup.ts'
import { until, yclient } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
await stack.core()

t.test('edge - nats-server paused while clients connect: the edge process survives and the clients sync', async (t) => {
  const edge = await stack.process('edge') // its own process: a crash would show as an exit
  const tok = await token({ tenant: 'acme' })
  const resume = await stack.pauseNats()
  t.teardown(resume)

  // Admission reads the edge's copy of the tenants bucket; opening the room needs core's state over NATS.
  const clients = ['one ', 'two ', 'three '].map((word) => {
    const client = yclient(edge.url, 'paused', tok)
    client.text.insert(0, word)
    return client
  })
  t.teardown(() => clients.forEach((c) => c.destroy()))
  const closes = await Promise.all(clients.map((c) => c.nextClose()))
  t.same(
    closes.map((c) => c.code),
    [1013, 1013, 1013],
    'each socket is refused with 1013 TryAgainLater while NATS does not answer',
  )
  t.equal(edge.child.exitCode, null, 'the edge process is alive while NATS is paused')
  resume()

  await until('all clients synced with every edit', () => clients.every((c) => c.provider.synced && ['one', 'two', 'three'].every((w) => c.text.toString().includes(w))), 30_000)
  t.equal(new Set(clients.map((c) => c.text.toString())).size, 1, 'the clients converged')
  t.equal(edge.child.exitCode, null, 'the edge process is still alive')
  const metrics = await (await fetch(`${edge.opsUrl}/metrics`)).text()
  const closed1013 = Number(/^docflow_edge_closes_total\{[^}]*code="1013"[^}]*\} (\d+)/m.exec(metrics)?.[1] ?? 0)
  t.ok(closed1013 >= 3, `each refusal counted under its close code (${closed1013})`)
})
