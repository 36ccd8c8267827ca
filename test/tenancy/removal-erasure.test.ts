import t from 'tap'
import * as Y from 'yjs'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { CLEAN_STREAM, DLQ_STREAM, ServiceUser, cleanSubject, tenantDeadLetterSubjects, tenantSnapshotsPrefix } from '../../contracts/mod.ts'
import { deleteDocument } from '../../core/deletion.ts'
import type { BlobStore } from '../../runtime/blobs/blob-store.ts'
import { BLOB_STORE_VARS } from '../../runtime/config.ts'
import { FsBlobStore } from '../../runtime/blobs/fs-store.ts'
import { Provisioner } from '../../scripts/lib/provisioner.ts'
import { Registry } from '../../scripts/lib/registry.ts'
import { natsFiles } from '../../scripts/lib/nats-server.ts'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, readState, until } from '../helpers/client.ts'
import { edit, malformedEdit, publishEdit } from '../helpers/edits.ts'

const stack = await setup({ tenants: { acme: 64 * 1024 ** 2, initech: 16 * 1024 ** 2, umbrella: 16 * 1024 ** 2, hooli: 16 * 1024 ** 2, wonka: 16 * 1024 ** 2, stark: 16 * 1024 ** 2 } })
// The folder stack.core() writes snapshots to, as `npm run tenant` opens core's store.
const blobs: BlobStore = await FsBlobStore.open(join(stack.dir, 'blobs'))
const progress: string[] = []
const provisioner = await Provisioner.open({ natsDir: join(stack.dir, 'nats'), natsUrl: stack.nats.url, databaseUrl: stack.pg.url, blobs, progress: (line) => progress.push(line) })
t.teardown(async () => {
  await provisioner.close()
  await stack.cleanup()
})


const count = async (sql: string, args: unknown[]) => Number((await stack.db.query(sql, args)).rows[0].n)
const snapshotRows = (tenant: string) => count('SELECT count(*) AS n FROM snapshots WHERE tenant = $1', [tenant])
const snapshotBlobs = async (tenant: string) => {
  const keys: string[] = []
  for await (const key of blobs.list(tenantSnapshotsPrefix(tenant))) keys.push(key)
  return keys
}
const lastErasure = async (tenant: string) => (await stack.db.query('SELECT rows_removed FROM erasures WHERE tenant = $1 AND doc_id IS NULL ORDER BY id DESC LIMIT 1', [tenant])).rows[0]?.rows_removed
const textOf = (u: Uint8Array) => {
  const d = new Y.Doc()
  Y.applyUpdate(d, u)
  return d.getText('t').toString()
}

/** Types `text` one character per update into tenant/docId. */
async function type(tenant: string, docId: string, text: string, clientID: number): Promise<void> {
  const js = jetstream(await stack.connect())
  const doc = new Y.Doc()
  doc.clientID = clientID
  let last: Uint8Array | null = null
  doc.on('update', (u: Uint8Array) => (last = u))
  for (const ch of text) {
    doc.getText('t').insert(doc.getText('t').length, ch)
    await publishEdit(js, tenant, docId, last!)
  }
}

t.test('tenancy - removal erases the tenant\'s snapshot rows and blobs; a tenant re-added under the name never reads them', async (t) => {
  const core = await stack.core({ compactEveryOps: 2, snapshotIntervalMs: 1 })
  await type('initech', 'plan', 'SECRET', 4242)
  await type('acme', 'plan', 'KEEP', 4343)
  await until('both committed', async () => (await count('SELECT count(*) AS n FROM op_log WHERE doc_id = $1', ['plan'])) === 10, 20_000)
  await until('snapshots of both', async () => (await snapshotRows('initech')) >= 1 && (await snapshotRows('acme')) >= 1, 20_000)
  await core.stop()
  const initechRows = await snapshotRows('initech')
  const acme = { rows: await snapshotRows('acme'), blobs: await snapshotBlobs('acme') }

  await provisioner.remove('initech', { actor: 'ops', reason: 'contract ended' })
  t.equal(await snapshotRows('initech'), 0, 'no snapshot rows of the removed tenant')
  t.same(await snapshotBlobs('initech'), [], 'no snapshot blobs of the removed tenant')
  t.match(await lastErasure('initech'), { snapshots: initechRows }, 'the erasure counts the snapshot rows')
  t.same({ rows: await snapshotRows('acme'), blobs: await snapshotBlobs('acme') }, acme, 'another tenant\'s snapshots stay')

  await provisioner.add('initech', 16 * 1024 ** 2)
  const core2 = await stack.core()
  t.teardown(() => core2.stop())
  await publishEdit(jetstream(await stack.connect()), 'initech', 'plan', edit('fresh', 777))
  await until('the new tenant\'s edit committed', async () => (await count('SELECT count(*) AS n FROM op_log WHERE tenant = $1', ['initech'])) === 1, 20_000)
  const seq = Number((await stack.db.query('SELECT stream_seq FROM op_log WHERE tenant = $1', ['initech'])).rows[0].stream_seq)
  const at = await fetch(`${core2.url}/v1/docs/plan/state?at=${seq}`, { headers: { authorization: `Bearer ${await token({ tenant: 'initech' })}` } })
  t.same([at.status, textOf(new Uint8Array(await at.arrayBuffer()))], [200, 'fresh'], 'state?at= shows only the new tenant\'s edit')
})

t.test('tenancy - removal erases the tenant\'s document deletion history: a re-added tenant uses a deleted id', async (t) => {
  const core = await stack.core()
  const js = jetstream(await stack.connect())
  await publishEdit(js, 'umbrella', 'memo', edit('old memo', 11))
  await publishEdit(js, 'acme', 'memo', edit('acme memo', 12))
  await until('both memos committed', async () => (await count('SELECT count(*) AS n FROM op_log WHERE doc_id = $1', ['memo'])) === 2, 20_000)
  for (const tenant of ['umbrella', 'acme']) await deleteDocument(stack.db, { tenant, docId: 'memo', actor: 'alice@ops', reason: 'ticket 7' })
  await core.stop()
  const acmeHistory = await count('SELECT count(*) AS n FROM doc_deletions WHERE tenant = $1', ['acme'])

  // The history still refuses any DELETE but a whole-tenant erasure's, in its transaction.
  const c = await stack.db.connect()
  try {
    await c.query('BEGIN')
    await c.query(`INSERT INTO erasures (tenant, doc_id, actor, reason, rows_removed) VALUES ('acme', 'memo', 'mallory', 'cover', '{}')`)
    await t.rejects(c.query("DELETE FROM doc_deletions WHERE tenant = 'acme'"), /doc_deletions is an append-only audit table: DELETE of tenant acme document memo refused/, 'a one-document erasure does not cover the history')
  } finally {
    await c.query('ROLLBACK')
    c.release()
  }

  await provisioner.remove('umbrella', { actor: 'ops', reason: 'contract ended' })
  t.equal(await count('SELECT count(*) AS n FROM doc_deletions WHERE tenant = $1', ['umbrella']), 0, 'no deletion history of the removed tenant')
  t.match(await lastErasure('umbrella'), { doc_deletions: 1 }, 'the erasure counts it')
  t.equal(await count('SELECT count(*) AS n FROM doc_deletions WHERE tenant = $1', ['acme']), acmeHistory, 'another tenant\'s history stays')

  // At once: the add waits until core no longer takes new edits of the name for ones ingested
  // before the removal (core/erasure-watch.ts ERASURE_CLOCK_SKEW_MS), and past the second whose tokens the removal revoked.
  const readding = provisioner.add('umbrella', 16 * 1024 ** 2)
  await until('it says why it waits', () => progress.some((line) => /^adding tenant umbrella: removed moments ago; waiting \d+ ms/.test(line)))
  // Meanwhile another provisioner (auto-provisioning, a second operator) adds a tenant: it stays.
  const other = await Provisioner.open({ natsDir: join(stack.dir, 'nats'), natsUrl: stack.nats.url, databaseUrl: stack.pg.url })
  await other.add('gringotts', 16 * 1024 ** 2)
  await other.close()
  await readding
  const registry = Registry.open(natsFiles(join(stack.dir, 'nats')).registry)
  t.ok(registry.tenant('umbrella') && registry.tenant('gringotts'), 'both tenants are in the registry')
  const core2 = await stack.core()
  t.teardown(() => core2.stop())
  // From an edge whose clock is 4 s behind PostgreSQL's (the fence allows 5 s either way).
  await publishEdit(js, 'umbrella', 'memo', edit('new memo', 13), undefined, Date.now() - 4_000)
  const tok = await token({ tenant: 'umbrella' })
  await until('the new tenant\'s memo committed', async () => (await count('SELECT count(*) AS n FROM op_log WHERE tenant = $1', ['umbrella'])) === 1, 20_000)
  t.equal(await materializedText(core2.url, 'memo', tok), 'new memo', 'the new tenant reads its document of the reused id')
  t.equal(await readState(core2.url, 'memo', await token({ tenant: 'acme' })), 404, 'acme\'s deleted memo stays deleted')
})

t.test('tenancy - a removal that dies while deleting snapshot blobs says how far it got, and running it again finishes it', async (t) => {
  const strays = 1_150
  for (let i = 0; i < strays; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, strays - i) }, (_, j) => blobs.put(`${tenantSnapshotsPrefix('hooli')}doc-${i + j}/0000000000000001.ydoc`, edit('x', 1))))
  }
  const acmeKey = `${tenantSnapshotsPrefix('acme')}kept/0000000000000001.ydoc`
  await blobs.put(acmeKey, edit('x', 1))
  let batches = 0
  // The process dies at its second batch of deletes (1,000 keys each).
  const dying: BlobStore = {
    location: blobs.location,
    put: (key, bytes, metadata) => blobs.put(key, bytes, metadata),
    get: (key) => blobs.get(key),
    head: (key) => blobs.head(key),
    list: (prefix) => blobs.list(prefix),
    delete: (key) => blobs.delete(key),
    deleteLeftovers: (prefix, recursive) => blobs.deleteLeftovers(prefix, recursive),
    deleteMany: async (keys) => {
      if (++batches > 1) throw new Error('killed')
      return await blobs.deleteMany(keys)
    },
    supersede: (key) => blobs.supersede(key),
    close: () => blobs.close(),
  }
  const dyingProgress: string[] = []
  const crashing = await Provisioner.open({ natsDir: join(stack.dir, 'nats'), natsUrl: stack.nats.url, databaseUrl: stack.pg.url, blobs: dying, progress: (line) => dyingProgress.push(line) })
  t.teardown(() => crashing.close())
  await t.rejects(crashing.remove('hooli'), /killed/, 'the first run dies')
  t.ok(dyingProgress.includes('removing tenant hooli: deleted 1000 snapshot blobs'), `a long deletion shows progress (${dyingProgress.at(-1)})`)
  t.equal((await snapshotBlobs('hooli')).length, 150, 'its blobs are partly gone')
  t.ok((await provisioner.list()).some((r) => r.tenant === 'hooli'), 'the tenant is still registered, so remove can run again')

  progress.length = 0
  await provisioner.remove('hooli')
  t.same(await snapshotBlobs('hooli'), [], 'the second run deleted the rest')
  t.ok(progress.includes('removing tenant hooli: deleted 150 snapshot blobs'), 'and says so')
  t.notOk((await provisioner.list()).some((r) => r.tenant === 'hooli'), 'the tenant is gone')
  t.ok((await snapshotBlobs('acme')).includes(acmeKey), 'another tenant\'s blob stays')
})

t.test('tenancy - npm run tenant -- remove deletes the snapshot blobs in the folder npm start gives core', async (t) => {
  await blobs.put(`${tenantSnapshotsPrefix('wonka')}recipe/0000000000000001.ydoc`, edit('x', 1))
  // The stack's folder is laid out as `npm start` leaves its data folder; no blob store variable set.
  const env: NodeJS.ProcessEnv = { ...process.env, DOCFLOW_DATA_DIR: stack.dir, DATABASE_URL: stack.pg.url }
  for (const name of Object.values(BLOB_STORE_VARS)) delete env[name]
  const script = fileURLToPath(new URL('../../scripts/tenant.ts', import.meta.url))
  const run = (...args: string[]) => new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', script, ...args], { env, timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr }))
  })
  const unaudited = await run('remove', 'wonka', '--yes')
  t.match(unaudited, { code: 2, stderr: /remove needs --actor <who asked> and --reason <why>/ }, 'refused without who and why')
  const { code, stdout, stderr } = await run('remove', 'wonka', '--yes', '--actor', 'alice@ops', '--reason', 'contract ended')
  t.equal(code, 0, stderr)
  t.match(stdout, `  removing tenant wonka: deleting snapshot blobs under snapshots/wonka/ in ${blobs.location}\n  removing tenant wonka: deleted 1 snapshot blobs\n`, 'it names the store and the count')
  t.same(await snapshotBlobs('wonka'), [], 'the blob is gone')
  t.match((await stack.db.query("SELECT actor, reason FROM erasures WHERE tenant = 'wonka' AND doc_id IS NULL ORDER BY id DESC LIMIT 1")).rows[0], { actor: 'alice@ops', reason: 'contract ended' }, 'the erasure records who asked and why')
})

t.test("tenancy - removal purges the tenant's dead letters and cleaned events from core's feeds, and no other tenant's", async (t) => {
  const core = await stack.core()
  t.teardown(() => core.stop())
  const js = jetstream(await stack.connect())
  const svc = await jetstreamManager(await stack.connect(ServiceUser.Admin))
  const held = async (stream: string, filter: string) => Object.values((await svc.streams.info(stream, { subjects_filter: filter })).state.subjects ?? {}).reduce((a, n) => a + n, 0)
  for (const tenant of ['stark', 'acme']) {
    const { base, malformed } = malformedEdit()
    await publishEdit(js, tenant, 'feeds', base)
    await publishEdit(js, tenant, 'feeds', malformed)
  }
  await until('both tenants on both feeds', async () => {
    for (const tenant of ['stark', 'acme']) if ((await held(DLQ_STREAM, tenantDeadLetterSubjects(tenant))) === 0 || (await held(CLEAN_STREAM, cleanSubject(tenant))) === 0) return false
    return true
  }, 20_000)
  const acme = { dlq: await held(DLQ_STREAM, tenantDeadLetterSubjects('acme')), clean: await held(CLEAN_STREAM, cleanSubject('acme')) }
  await provisioner.remove('stark', { actor: 'ops', reason: 'contract ended' })
  t.equal(await held(DLQ_STREAM, tenantDeadLetterSubjects('stark')), 0, 'no dead letter of the removed tenant')
  t.equal(await held(CLEAN_STREAM, cleanSubject('stark')), 0, 'no cleaned event of it')
  t.same({ dlq: await held(DLQ_STREAM, tenantDeadLetterSubjects('acme')), clean: await held(CLEAN_STREAM, cleanSubject('acme')) }, acme, "acme's stay")
})
