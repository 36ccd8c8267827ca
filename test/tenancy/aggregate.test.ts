import t from 'tap'
import * as Y from 'yjs'
import { DiscardPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream'
import { AGG_STREAM, ServiceUser, parseEditSubject, tenantStreamName } from '../../contracts/mod.ts'
import { setup } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'
import { publishEdit } from '../helpers/edits.ts'
import { aggMaxBytes } from '../../scripts/lib/stream-configs.ts'
import { natsFiles } from '../../scripts/lib/nats-server.ts'
import { Registry } from '../../scripts/lib/registry.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const TENANTS = ['acme', 'globex']

async function counts() {
  const svc = await jetstreamManager(await stack.connect(ServiceUser.Admin))
  const agg = (await svc.streams.info(AGG_STREAM)).state.messages
  let sources = 0
  for (const tenant of TENANTS) {
    const jsm = await jetstreamManager(await stack.connect({ tenant, kind: 'admin' }))
    sources += (await jsm.streams.info(tenantStreamName(tenant))).state.messages
  }
  return { agg, sources }
}

t.test('tenancy - per-document order holds across partitions, tenants and the aggregate', async (t) => {
  const core = await stack.core()
  const js = jetstream(await stack.connect(ServiceUser.Edge))
  const DOCS = 40
  const EDITS = 25
  const writers = Array.from({ length: DOCS }, (_, i) => {
    const doc = new Y.Doc()
    doc.clientID = 1_000 + i
    return { tenant: TENANTS[i % 2]!, docId: `ordered-${i}`, doc }
  })
  // Interleave: edit k of every document, then edit k+1 of every document, ...
  const pending: Promise<unknown>[] = []
  for (let k = 0; k < EDITS; k++) {
    for (const w of writers) {
      const before = Y.encodeStateVector(w.doc)
      w.doc.getText('t').insert(k, String(k % 10))
      pending.push(publishEdit(js, w.tenant, w.docId, Y.encodeStateAsUpdate(w.doc, before)))
    }
  }
  await Promise.all(pending)
  await until('every edit materialized', async () => (await stack.db.query('SELECT count(*)::int AS n FROM op_log')).rows[0].n === DOCS * EDITS, 30_000)
  const rows = (await stack.db.query('SELECT tenant, doc_id, update, status, stream_seq FROM op_log ORDER BY id')).rows
  const byDoc = new Map<string, { clock: number; status: string }[]>()
  for (const r of rows) {
    const clock = Y.decodeUpdate(r.update).structs[0]!.id.clock
    byDoc.set(`${r.tenant}/${r.doc_id}`, [...(byDoc.get(`${r.tenant}/${r.doc_id}`) ?? []), { clock, status: r.status }])
  }
  let inOrder = 0
  for (const [doc, seen] of byDoc) {
    const clocks = seen.map((s) => s.clock)
    if (JSON.stringify(clocks) === JSON.stringify([...clocks].sort((a, b) => a - b)) && seen.every((s) => s.status === 'applied')) inOrder++
    else t.fail(`${doc} out of order: ${clocks.join(',')}`)
  }
  t.equal(inOrder, DOCS, 'every document applied in the order it was written, none held as pending')
  const svc = await jetstreamManager(await stack.connect(ServiceUser.Admin))
  const partitions = new Set<number>()
  for (const w of writers) {
    const m = await svc.streams.getMessage(AGG_STREAM, { last_by_subj: `ten.${w.tenant}.ed.*.${w.docId}` }).catch(() => null)
    if (m) partitions.add(parseEditSubject(m.subject).partition)
  }
  t.ok(partitions.size >= stack.partitions / 2, `documents spread over ${partitions.size} of ${stack.partitions} partitions`)
  await core.stop()
})

t.test('tenancy - AGG holds exactly the sum of its sources after nats-server restarts', async (t) => {
  const burst = async (n: number, tag: string) => {
    const js = jetstream(await stack.connect(ServiceUser.Edge))
    for (let i = 0; i < n; i++) {
      const doc = new Y.Doc()
      doc.getText('t').insert(0, `${tag}-${i}`)
      await publishEdit(js, TENANTS[i % 2]!, `agg-${tag}-${i % 7}`, Y.encodeStateAsUpdate(doc))
    }
  }
  const base = (await counts()).sources
  await burst(400, 'a')
  await until('AGG caught up', async () => {
    const c = await counts()
    return c.agg === c.sources
  })
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    await stack.restartNats(signal)
    await burst(200, signal)
    await until(`AGG equals the sum of its sources after ${signal}`, async () => {
      const c = await counts()
      return c.agg === c.sources
    }, 30_000)
  }
  const c = await counts()
  t.equal(c.sources, base + 800, 'the tenant streams hold every published message')
  t.equal(c.agg, c.sources, `AGG ${c.agg} = sources ${c.sources}`)
})

t.test('tenancy - AGG holds every tenant stream within the service quota; lag is a metric', async (t) => {
  const svc = await jetstreamManager(await stack.connect(ServiceUser.Admin))
  const info = await svc.streams.info(AGG_STREAM)
  const account = await svc.getAccountInfo()
  // The quotas as provisioning recorded them (no JetStream round trip: the server was just restarted).
  const quotas = Registry.open(natsFiles(stack.nats.dir).registry).tenants().map(([, entry]) => entry.maxStorageBytes)
  t.equal(info.config.discard, DiscardPolicy.Old, 'should the cap ever be reached, the loss is at the front, where core sees it')
  t.ok(info.config.max_bytes >= aggMaxBytes(quotas) && aggMaxBytes(quotas) >= quotas.reduce((a, b) => a + b, 0), `cap ${info.config.max_bytes} holds every tenant's quota (${quotas.join(' + ')}) with the source headers`)
  t.ok(info.config.max_bytes <= 0.8 * account.limits.max_storage, `cap ${info.config.max_bytes} is at most 80% of the service quota ${account.limits.max_storage}`)
  const core = await stack.core()
  await until('usage gauge published', async () => {
    const text = await core.core.metrics.registry.metrics()
    const m = /docflow_core_agg_usage_ratio\{[^}]*\} ([0-9.e-]+)/.exec(text)
    return m !== null && Number(m[1]) > 0 && Math.abs(Number(m[1]) - info.state.bytes / info.config.max_bytes) < 0.01
  })
  await until('partition lag gauges published', async () => {
    const text = await core.core.metrics.registry.metrics()
    return /docflow_core_consumer_pending\{[^}]*partition="0"/.test(text) && /docflow_core_consumer_oldest_pending_seconds\{[^}]*partition="0"/.test(text)
  })
  await core.stop()
})
