import t from 'tap'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { AGG_STREAM, ServiceUser, snapshotKey } from '../../contracts/mod.ts'
import { migrate } from '../../core/migrate.ts'
import { FsBlobStore } from '../../runtime/blobs/fs-store.ts'
import { edit, publishEdit } from '../helpers/edits.ts'
import { setup } from '../helpers/setup.ts'
import { until } from '../helpers/client.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const stack = await setup()
t.teardown(() => stack.cleanup())

interface Run {
  code: number
  stdout: string
  stderr: string
}

/** Runs the installed `docflow` bin (or `npm run docflow --` with `npm: true`) against this stack. */
function docflow(args: string[], opts: { env?: NodeJS.ProcessEnv; npm?: boolean } = {}): Promise<Run> {
  const env = { ...process.env, DOCFLOW_DATA_DIR: stack.dir, DATABASE_URL: stack.pg.url, NATS_URL: stack.nats.url, LOG_LEVEL: 'silent', ...opts.env }
  const [file, argv] = opts.npm ? ['npm', ['run', '--silent', 'docflow', '--', ...args]] : [process.execPath, [join(ROOT, 'scripts/docflow-bin.mjs'), ...args]]
  return new Promise((resolve) => {
    execFile(file, argv as string[], { cwd: ROOT, env, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr })
    })
  })
}

const lines = (text: string) => text.split('\n').filter((l) => l.trim() !== '')
const change = (verb: string, doc: string, extra: string[] = []) => ['doc', verb, '--tenant', 'acme', '--doc', doc, '--actor', 'ops@cli', '--reason', `${verb} test`, ...extra]

const client = await stack.db.connect()
await migrate(client)
client.release()
// A document as core leaves it: one op-log row (core is not needed for the CLI).
await stack.db.query("INSERT INTO op_log (tenant, doc_id, stream_seq, msg_id, user_id, edge_id, update, status, ingest_ts) VALUES ('acme', 'cli-doc', 1, 'm1', 'u', 'e', $1, 'applied', now())", [Buffer.from(edit('hi', 7))])

t.test('scripts - docflow refuses a wrong command line with exit 2 and a one-line reason', async (t) => {
  const none = await docflow([])
  t.equal(none.code, 2, 'no command')
  t.match(none.stdout, /doc delete.*\n.*doc restore.*\n.*doc erase/, 'usage lists the commands')
  const unknown = await docflow(['doc', 'shred'])
  t.equal(unknown.code, 2)
  t.equal(lines(unknown.stderr).length, 1, `one line: ${unknown.stderr}`)
  const missing = await docflow(['doc', 'delete', '--tenant', 'acme', '--doc', 'cli-doc', '--actor', 'ops@cli'])
  t.equal(missing.code, 2)
  t.same(lines(missing.stderr), ['docflow doc delete: --reason is required'])
  const badTenant = await docflow(change('delete', 'cli-doc').map((a) => (a === 'acme' ? 'Not A Tenant' : a)))
  t.equal(badTenant.code, 2)
  t.match(badTenant.stderr, /bad --tenant/)
})

t.test('scripts - docflow finds the command words wherever the options are', async (t) => {
  const run = await docflow(['--tenant', 'acme', 'doc', '--doc', 'no-such-doc', 'delete', '--actor', 'ops@cli', '--reason', 'options first'])
  t.equal(run.code, 1, `the command ran (${run.stderr.trim()})`)
  t.same(lines(run.stderr), ['docflow doc delete: tenant acme has no document no-such-doc'])
})

t.test('scripts - docflow doc delete, restore and erase: exit 0 with --json, exit 1 with a one-line reason when they cannot', async (t) => {
  const nothing = await docflow(change('delete', 'no-such-doc'))
  t.equal(nothing.code, 1, 'no such document')
  t.same(lines(nothing.stderr), ['docflow doc delete: tenant acme has no document no-such-doc'])

  const deleted = await docflow(change('delete', 'cli-doc', ['--json']), { npm: true })
  t.equal(deleted.code, 0, `npm run docflow -- doc delete: ${deleted.stderr}`)
  t.match(JSON.parse(deleted.stdout), { ok: true, action: 'delete', tenant: 'acme', docId: 'cli-doc', actor: 'ops@cli', reason: 'delete test' })
  const again = await docflow(change('delete', 'cli-doc'))
  t.equal(again.code, 1)
  t.same(lines(again.stderr), ['docflow doc delete: document cli-doc of acme is already deleted'])

  const restored = await docflow(change('restore', 'cli-doc'))
  t.equal(restored.code, 0, restored.stderr)
  t.match(restored.stdout, /^restored acme\/cli-doc \(audit row \d+\)\n$/)
  t.same((await stack.db.query("SELECT action, actor FROM doc_deletions WHERE doc_id = 'cli-doc' ORDER BY id")).rows, [{ action: 'delete', actor: 'ops@cli' }, { action: 'restore', actor: 'ops@cli' }], 'audited')

  // A snapshot of it in the stack's folder store (where npm start keeps blobs: <data folder>/blobs).
  const blobs = await FsBlobStore.open(join(stack.dir, 'blobs'))
  const key = snapshotKey('acme', 'cli-doc', 1)
  await blobs.put(key, edit('hi', 7))
  await stack.db.query("INSERT INTO snapshots (tenant, doc_id, stream_seq, last_ingest_ts, blob_key, bytes) VALUES ('acme', 'cli-doc', 1, now(), $1, 10)", [key])
  const erased = await docflow(change('erase', 'cli-doc', ['--json']))
  t.equal(erased.code, 0, erased.stderr)
  const report = JSON.parse(erased.stdout)
  t.match(report, { ok: true, tenant: 'acme', docId: 'cli-doc', markedDeleted: true, rowsRemoved: { op_log: 1, docs: 0, snapshots: 1 }, snapshotBlobsDeleted: 1 })
  t.equal(report.erasureIds.length, 1)
  t.same(report.streams.map((s: { stream: string }) => s.stream), ['AGG', 'EDITS_acme', 'DLQ'], 'stream copies reported per stream')
  t.equal(await blobs.get(key), null, 'the snapshot blob is gone')
  t.same((await stack.db.query("SELECT actor, reason FROM erasures WHERE doc_id = 'cli-doc'")).rows, [{ actor: 'ops@cli', reason: 'erase test' }], 'the erasure is audited')
  t.equal((await stack.db.query("SELECT count(*)::int AS n FROM op_log WHERE doc_id = 'cli-doc'")).rows[0].n, 0)
  t.equal((await stack.db.query("SELECT action FROM doc_deletions WHERE doc_id = 'cli-doc' ORDER BY id DESC LIMIT 1")).rows[0].action, 'delete', 'an erased document stays deleted')
  const text = await docflow(change('restore', 'cli-doc'))
  t.equal(text.code, 0, 'an erased document can be restored (empty)')

  // A database core has not migrated yet (the CLI leaves the schema to core).
  await stack.db.query('CREATE DATABASE unmigrated')
  const url = new URL(stack.pg.url)
  url.pathname = '/unmigrated'
  const unmigrated = await docflow(change('delete', 'cli-doc'), { env: { DATABASE_URL: url.toString() } })
  t.equal(unmigrated.code, 1)
  t.equal(lines(unmigrated.stderr).length, 1, 'one line')
  t.match(unmigrated.stderr, /schema is older than this command.*start core once to migrate it/)

  const noNats = await docflow(change('delete', 'cli-doc'), { env: { NATS_URL: 'nats://127.0.0.1:1' } })
  t.equal(noNats.code, 1)
  t.equal(lines(noNats.stderr).length, 1, 'one line')
  t.match(noNats.stderr, /cannot reach nats-server at nats:\/\/127\.0\.0\.1:1/)
})

t.test('scripts - docflow doc erase refuses an unknown tenant or a document with nothing stored: exit 1, one line, nothing marked', async (t) => {
  const tenant = await docflow(change('erase', 'x').map((a) => (a === 'acme' ? 'nope' : a)))
  t.equal(tenant.code, 1, 'unknown tenant')
  t.same(lines(tenant.stderr), ['docflow doc erase: unknown tenant nope'])
  const doc = await docflow(change('erase', 'nope'))
  t.equal(doc.code, 1, 'no such document')
  t.same(lines(doc.stderr), ['docflow doc erase: tenant acme has no document nope'])
  t.equal(doc.stdout, '', 'no erasure reported')
  const marks = await stack.db.query("SELECT tenant, doc_id FROM doc_deletions WHERE doc_id IN ('nope', 'x') UNION ALL SELECT tenant, doc_id FROM erasures WHERE doc_id IN ('nope', 'x')")
  t.same(marks.rows, [], 'neither id deleted (its later edits stay visible) nor an erasure recorded')
})

t.test('scripts - docflow doc erase says on stderr how far it is while it deletes AGG messages one by one', async (t) => {
  const n = 2_000
  const js = jetstream(await stack.connect())
  const aggJsm = await jetstreamManager(await stack.connect(ServiceUser.Admin))
  const before = (await aggJsm.streams.info(AGG_STREAM)).state.last_seq
  for (let i = 0; i < n; i += 100) await Promise.all(Array.from({ length: 100 }, (_, j) => publishEdit(js, 'acme', 'big-doc', edit(`edit ${i + j}`, 2_000 + i + j))))
  await until('every message in AGG', async () => (await aggJsm.streams.info(AGG_STREAM)).state.last_seq >= before + n)
  await stack.db.query(
    "INSERT INTO op_log (tenant, doc_id, stream_seq, msg_id, user_id, edge_id, update, status, ingest_ts) SELECT 'acme', 'big-doc', s, 'big-' || s, 'u', 'e', $2, 'applied', now() FROM generate_series($1::bigint + 1, $1::bigint + $3) s",
    [before, Buffer.from(edit('x', 7)), n],
  )
  const held = (await aggJsm.streams.info(AGG_STREAM)).state.messages
  const erasing = docflow(change('erase', 'big-doc', ['--json']))
  // A slow server, on any machine: once the deletions began, nats-server stalls past the interval.
  await until('the erasure deleting AGG messages', async () => (await aggJsm.streams.info(AGG_STREAM)).state.messages < held, 30_000)
  const resume = await stack.pauseNats()
  t.teardown(resume)
  await sleep(1_500)
  resume()
  const erased = await erasing
  t.equal(erased.code, 0, erased.stderr)
  t.equal(JSON.parse(erased.stdout).streams[0].removed, n, 'every message deleted')
  const progress = lines(erased.stderr)
  t.ok(progress.length >= 2, `a line after the stall and one at the end: ${progress.join(' / ')}`)
  for (const line of progress) t.match(line, new RegExp(`^docflow doc erase: acme/big-doc: AGG messages deleted \\d+ of ${n}$`))
  t.equal(progress.at(-1), `docflow doc erase: acme/big-doc: AGG messages deleted ${n} of ${n}`, 'the last says it is done')
})
