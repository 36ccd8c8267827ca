import t from 'tap'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { snapshotKey } from '../../contracts/mod.ts'
import { migrate } from '../../core/migrate.ts'
import { FsBlobStore } from '../../runtime/blobs/fs-store.ts'
import { edit } from '../helpers/edits.ts'
import { setup } from '../helpers/setup.ts'

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
  t.same(report.streams.map((s: { stream: string }) => s.stream), ['AGG', 'EDITS_acme'], 'stream copies reported per stream')
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
