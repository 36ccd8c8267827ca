// A core that loses NATS but still reaches PostgreSQL: its lease session would keep its
// partitions from the cores that can consume them. It hands them back once NATS has been away
// longer than a lease lives, and takes them again only once it is back (core/balance.ts).
import t from 'tap'
import net from 'node:net'
import { join } from 'node:path'
import { jetstream } from '@nats-io/jetstream'
import { AGG_STREAM, ServiceUser, serviceInboxPrefix } from '../../contracts/mod.ts'
import { Core } from '../../core/core.ts'
import { createCoreMetrics } from '../../core/metrics.ts'
import { createRegistry } from '../../runtime/metrics.ts'
import { connectNats } from '../../runtime/nats.ts'
import { createLogger } from '../../runtime/log.ts'
import { FsBlobStore } from '../../runtime/blobs/fs-store.ts'
import { freePort } from '../../scripts/lib/proc.ts'
import { edit, publishEdit } from '../helpers/edits.ts'
import { setup, JWT_SECRET } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const log = createLogger('cut', 'fatal')

/** A TCP proxy in front of nats-server that can be cut (every socket dropped, new ones refused) and restored. */
async function natsProxy(target: number) {
  const port = await freePort()
  const sockets = new Set<net.Socket>()
  let server: net.Server | null = null
  const listen = () =>
    new Promise<void>((resolve) => {
      server = net.createServer((c) => {
        const up = net.connect(target, '127.0.0.1')
        sockets.add(c).add(up)
        c.pipe(up).pipe(c)
        const end = () => {
          c.destroy()
          up.destroy()
          sockets.delete(c)
          sockets.delete(up)
        }
        c.on('error', end).on('close', end)
        up.on('error', end).on('close', end)
      })
      server.listen(port, '127.0.0.1', () => resolve())
    })
  await listen()
  return {
    url: `nats://127.0.0.1:${port}`,
    cut: async () => {
      const closed = new Promise((r) => server!.close(r))
      for (const s of sockets) s.destroy()
      sockets.clear()
      await closed
    },
    restore: listen,
  }
}

t.test('core - a core cut off from NATS hands its partitions to a core that reaches it, and takes its share again once NATS is back', async (t) => {
  const proxy = await natsProxy(stack.nats.port)
  const c = stack.credentials(ServiceUser.Core)
  const nc = await connectNats({ servers: proxy.url, user: c.user, pass: c.pass, name: 'core-cut', inboxPrefix: serviceInboxPrefix(ServiceUser.Core) }, log)
  const metricsA = createCoreMetrics(createRegistry('core', false))
  const a = new Core({ blobs: await FsBlobStore.open(join(stack.dir, 'blobs')), port: 0, host: '127.0.0.1', opsPort: 0, opsHost: '127.0.0.1', databaseUrl: stack.pg.url, tokens: { secret: JWT_SECRET }, stream: AGG_STREAM, editPartitions: stack.partitions, maxBatch: 512, maxDocs: 100, compactEveryOps: 256, ackWaitMs: 30_000, maxAckPending: 1_024, leaseRetryMs: 200, retryDelayMs: 200, monitorIntervalMs: 200 }, nc, log, metricsA)
  await a.start()
  t.teardown(async () => {
    await a.stop()
    await nc.close().catch(() => undefined)
    await proxy.cut()
  })
  const b = await stack.core()
  const held = async (m: typeof metricsA) => (await m.leasesHeld.get()).values[0]?.value ?? 0
  await until('each core holds half', async () => (await held(metricsA)) === stack.partitions / 2 && (await held(b.core.metrics)) === stack.partitions / 2, 20_000)

  await proxy.cut()
  const js = jetstream(await stack.connect(ServiceUser.Edge))
  const docs = Array.from({ length: 16 }, (_, i) => `cut-${i}`)
  for (const [i, d] of docs.entries()) await publishEdit(js, 'acme', d, edit(`x${i}`, 100 + i))
  const committed = async () => (await stack.db.query("SELECT count(*)::int AS n FROM op_log WHERE doc_id LIKE 'cut-%'")).rows[0].n as number
  await until('every edit committed while the cut core is away (the other core took its partitions)', async () => (await committed()) === docs.length, 20_000)
  t.equal(await held(metricsA), 0, 'the cut core holds no lease')
  t.equal(await held(b.core.metrics), stack.partitions, 'the connected core holds them all')

  await proxy.restore()
  await until('the cores share the partitions again', async () => (await held(metricsA)) === stack.partitions / 2 && (await held(b.core.metrics)) === stack.partitions / 2, 30_000)
})
