import t from 'tap'
import { Limit } from '../../contracts/mod.ts'
import { EdgeLimiter, type EdgeLimits } from '../../edge/limits.ts'
import { createEdgeMetrics } from '../../edge/metrics.ts'
import { createLogger } from '../../runtime/log.ts'
import { createRegistry } from '../../runtime/metrics.ts'

const limiter = (limits: Partial<EdgeLimits>, liveEdges = () => 1) => {
  const l = new EdgeLimiter(limits, liveEdges, 1024, createEdgeMetrics(createRegistry('edge', false)), createLogger('test', 'silent'))
  t.teardown(() => l.stop())
  return l
}

t.test('edge - connects waiting for their token check are capped per IP and per edge', async (t) => {
  const l = limiter({ ipConnectsPerS: 0, ipPendingAdmissions: 2, pendingAdmissions: 3 })
  t.equal(l.startAdmission('10.0.0.1'), null)
  t.equal(l.startAdmission('10.0.0.1'), null)
  t.equal(l.startAdmission('10.0.0.1'), Limit.PendingAdmissions, 'a third from the same IP waits for none of them')
  t.equal(l.startAdmission('10.0.0.2'), null, 'another IP still gets the last edge-wide place')
  t.equal(l.startAdmission('10.0.0.3'), Limit.PendingAdmissions, 'the edge-wide cap')
  l.admitted('10.0.0.1')
  t.equal(l.startAdmission('10.0.0.1'), null, 'a finished check frees its place')
})

t.test("edge - a tenant's rate is shared by the live edges", async (t) => {
  let edges = 1
  const l = limiter({ tenantUpdatesPerS: 10, tenantBytesPerS: 0 }, () => edges)
  let passed = 0
  while (l.takeTenantUpdate('acme', 1) === null) passed++
  t.equal(passed, 10, 'one edge: the whole rate (one second of it as the burst)')
  t.equal(l.takeTenantUpdate('globex', 1), null, 'another tenant has its own budget')
  t.equal(l.tenantCooling('acme'), Limit.TenantUpdates, 'new connects of the tenant over its rate are refused for a while')
  t.equal(l.tenantCooling('globex'), null)
  edges = 2
  passed = 0
  while (l.takeTenantUpdate('initech', 1) === null) passed++
  t.equal(passed, 5, 'two edges: half each')
})

t.test('edge - a negative limit, or a burst, cap or size of 0, is refused at construction', async (t) => {
  t.throws(() => limiter({ connectionUpdatesPerS: -1 }), /connectionUpdatesPerS must be a number >= 0/)
  t.throws(() => limiter({ maxDocumentBytes: 0 }), /maxDocumentBytes must be a number >= 1/)
  t.throws(() => limiter({ pendingAdmissions: 0 }), /pendingAdmissions must be a number >= 1/)
  t.doesNotThrow(() => limiter({ tenantBytesPerS: 0, userConnections: 0 }), 'rates and sockets per user may be off')
})
