// A worker's partition lease against core's NATS-away hand-back (core.ts watchNats, balance.ts):
// real PostgreSQL leases, a real worker consuming from the real stream; no core process runs here.
import t from 'tap'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { AGG_STREAM, ServiceUser, corePartitions } from '../../contracts/mod.ts'
import { DEFAULT_LEASE_TIMING, LeaseHolder, type PartitionLease } from '../../core/lease.ts'
import { LeaseProbe } from '../../core/lease-probe.ts'
import { PartitionBalance } from '../../core/balance.ts'
import { PartitionWorker } from '../../core/worker.ts'
import { migrate } from '../../core/migrate.ts'
import { createCoreMetrics } from '../../core/metrics.ts'
import { createRegistry } from '../../runtime/metrics.ts'
import { createLogger } from '../../runtime/log.ts'
import { setup } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'
import { leaseSessions } from '../helpers/partitions.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
t.test('core - a partition acquired just as NATS went away is handed back at once, not held through the outage', async (t) => {
  const c = await stack.db.connect()
  await migrate(c).finally(() => c.release())
  const log = createLogger('test', 'silent')
  const metrics = createCoreMetrics(createRegistry('core', false))
  const holder = new LeaseHolder(stack.pg.url, DEFAULT_LEASE_TIMING)
  t.teardown(() => holder.close())
  await holder.open()
  const balance = new PartitionBalance(stack.partitions, log, metrics)
  const probe = new LeaseProbe({ databaseUrl: stack.pg.url, leaseRetryMs: 100, ...DEFAULT_LEASE_TIMING, ownSession: () => holder.open(), onView: (view) => balance.update(view) }, log, metrics)
  // The real lock, then core's NATS-away timer fires while the answer is on its way (core.ts watchNats).
  const acquire = holder.tryAcquire.bind(holder)
  let acquired: PartitionLease | null = null
  holder.tryAcquire = async (partition) => {
    acquired = await acquire(partition)
    balance.streamReachable(false)
    return acquired
  }
  const nc = await stack.connect(ServiceUser.Core)
  const [p] = corePartitions(stack.partitions)
  const worker = new PartitionWorker({ ...p!, stream: AGG_STREAM, ackWaitMs: 30_000, maxAckPending: 64, editPartitions: stack.partitions, maxBatch: 64, compactEveryOps: 256, maxDocs: 100, leaseRetryMs: 100, retryDelayMs: 100 }, jetstream(nc), await jetstreamManager(nc), holder, probe, balance, stack.db, log, metrics)
  probe.start()
  worker.start()
  t.teardown(async () => {
    await worker.stop()
    await probe.close()
  })
  await until('the worker took the partition', () => acquired !== null)
  await until('and gave it back', async () => (await leaseSessions(stack.db)).every((s) => s.partition !== p!.partition) && !worker.owned, 5_000)
})
