import t from 'tap'
import { setup } from '../helpers/setup.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const edge = await stack.edge()

t.test('edge - /metrics is served on the ops port only; /healthz on both', async (t) => {
  const publicUrl = edge.url.replace('ws://', 'http://')
  t.equal((await fetch(`${publicUrl}/metrics`)).status, 404, 'no metrics on the public port')
  t.equal((await fetch(`${publicUrl}/healthz`)).status, 200, 'health on the public port (contract)')
  t.not(edge.opsUrl, publicUrl, 'the ops port is another port')
  const metrics = await fetch(`${edge.opsUrl}/metrics`)
  t.equal(metrics.status, 200, 'metrics on the ops port')
  t.match(await metrics.text(), /^docflow_edge_connections[ {]/m, 'edge metrics')
  t.equal((await fetch(`${edge.opsUrl}/healthz`)).status, 200, 'health on the ops port')
})
