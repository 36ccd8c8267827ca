// What an operator sees when edge or core cannot start: the real entry points run as child
// processes with a bad environment. A bad value is one line naming its variable (exit 2); a
// server that cannot be reached is one line naming the variable pointing at it (exit 1); no
// stack, and no secret, in either.
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { z } from 'zod'
import { ConfigError, loadConfig } from '../../runtime/config.ts'
import { natsServerBin } from '../../scripts/lib/binaries.mjs'
import { freePort, freePorts, probe, terminate, waitFor } from '../../scripts/lib/proc.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const SECRET = 'hunter2-hunter2'
const blobDir = mkdtempSync(join(tmpdir(), 'docflow-start-errors-'))
t.teardown(() => rmSync(blobDir, { recursive: true, force: true }))

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs `service`'s main.ts with only PATH and `env` set, until it exits. */
function run(service: 'edge' | 'core', env: Record<string, string>): Promise<Run> {
  const child = spawn(process.execPath, ['--import', 'tsx', `${service}/main.ts`], { cwd: ROOT, env: { PATH: process.env.PATH, DOCFLOW_BLOB_DIR: blobDir, ...env } })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d))
  child.stderr.on('data', (d: Buffer) => (stderr += d))
  const killer = setTimeout(() => child.kill('SIGKILL'), 60_000)
  return new Promise((resolve) =>
    child.once('close', (code) => {
      clearTimeout(killer)
      resolve({ code, stdout, stderr })
    }),
  )
}

/** The run's stderr is `lines` lines and carries no stack frame and no SECRET. */
function plain(t: Test, r: Run, lines: number): void {
  t.equal(r.stderr.trimEnd().split('\n').length, lines, `${lines} line(s) on stderr: ${r.stderr}`)
  t.notMatch(r.stderr, /^\s+at /m, 'no stack')
  t.notOk(`${r.stdout}${r.stderr}`.includes(SECRET), 'no secret in the output')
}

const closedPort = await freePort()
const closedNats = `nats://127.0.0.1:${closedPort}`

t.test('runtime - an unknown LOG_LEVEL is a config error naming the variable and the levels', async (t) => {
  for (const service of ['edge', 'core'] as const) {
    const r = await run(service, { LOG_LEVEL: 'verbose', DATABASE_URL: 'postgres://127.0.0.1/docflow', NATS_URL: closedNats })
    t.equal(r.code, 2, `${service} exits 2`)
    t.match(r.stderr, /^ {2}LOG_LEVEL="verbose": one of fatal, error, warn, info, debug, trace, silent$/m, service)
    plain(t, r, 2)
  }
})

t.test('runtime - a config error shows no secret: secret variables hidden, URL credentials hidden', async (t) => {
  const r = await run('core', { DOCFLOW_JWT_SECRET: SECRET, DATABASE_URL: `mysql://docflow:${SECRET}@db/docflow?sslpassword=${SECRET}` })
  t.equal(r.code, 2)
  t.match(r.stderr, /^ {2}DOCFLOW_JWT_SECRET=\[redacted\]: at least 32 bytes/m)
  t.match(r.stderr, /^ {2}DATABASE_URL="mysql:\/\/docflow:\[redacted\]@db\/docflow\?sslpassword=\[redacted\]": a postgres:\/\//m)
  plain(t, r, 3)

  // The rule is by name, for every variable a schema reads: *_PASS, *_SECRET, *_TOKEN, *_KEY, *CREDENTIALS*.
  const Schema = z.object({ pass: z.string().min(40), key: z.string().min(40), creds: z.string().min(40), user: z.string().min(40) })
  const vars = { pass: 'CORE_NATS_PASS', key: 'S3_ACCESS_KEY', creds: 'GOOGLE_APPLICATION_CREDENTIALS', user: 'CORE_NATS_USER' }
  const err = t.throws(() => loadConfig(Schema, vars, { CORE_NATS_PASS: SECRET, S3_ACCESS_KEY: SECRET, GOOGLE_APPLICATION_CREDENTIALS: SECRET, CORE_NATS_USER: 'core' })) as ConfigError
  t.equal(err.name, ConfigError.name)
  t.notOk(err.message.includes(SECRET), err.message)
  t.match(err.message, /CORE_NATS_USER="core"/, 'a user name is shown')
})

t.test('runtime - DATABASE_URL that is not a postgres URL is a config error', async (t) => {
  const r = await run('core', { DATABASE_URL: 'notaurl', NATS_URL: closedNats })
  t.equal(r.code, 2)
  t.match(r.stderr, /^ {2}DATABASE_URL="notaurl": a postgres:\/\//m)
  plain(t, r, 2)
})

t.test('runtime - an edge limit below its minimum names its variable, not the limit field', async (t) => {
  const r = await run('edge', { EDGE_LIMIT_CONNECTION_UPDATE_BURST: '0', EDGE_LIMIT_CONNECTION_UPDATES_PER_S: '-1', NATS_URL: closedNats })
  t.equal(r.code, 2)
  t.match(r.stderr, /^ {2}EDGE_LIMIT_CONNECTION_UPDATE_BURST="0": at least 1/m)
  t.match(r.stderr, /^ {2}EDGE_LIMIT_CONNECTION_UPDATES_PER_S="-1": at least 0/m, 'a rate may be 0, not below')
  t.notMatch(r.stderr, /connectionUpdateBurst/)
  plain(t, r, 3)
})

t.test('runtime - NATS that cannot be reached is one line naming NATS_URL, credentials hidden', async (t) => {
  for (const service of ['edge', 'core'] as const) {
    const r = await run(service, { NATS_URL: `nats://${service}:${SECRET}@127.0.0.1:${closedPort}`, DATABASE_URL: 'postgres://127.0.0.1/docflow' })
    t.equal(r.code, 1, `${service} exits 1`)
    t.match(r.stderr, new RegExp(`^${service}: cannot connect to NATS at NATS_URL \\(nats://${service}:\\[redacted\\]@127\\.0\\.0\\.1:${closedPort}\\): connection refused`), service)
    plain(t, r, 1)
  }
})

t.test('runtime - wrong NATS credentials and an unreachable DATABASE_URL are one line each', { skip: natsServerBin() ? false : 'nats-server is not installed' }, async (t) => {
  const [port, monitorPort] = await freePorts(2)
  const nats = spawn(natsServerBin()!, ['-a', '127.0.0.1', '-p', String(port), '-m', String(monitorPort), '--user', 'service', '--pass', 'right-password'], { stdio: 'ignore' })
  t.teardown(() => terminate(nats))
  await waitFor('nats-server', async () => (await probe(`http://127.0.0.1:${monitorPort}/healthz`)).ok)
  const natsUrl = `nats://127.0.0.1:${port}`

  const refused = await run('edge', { NATS_URL: natsUrl, EDGE_NATS_USER: 'service', EDGE_NATS_PASS: SECRET })
  t.equal(refused.code, 1)
  t.match(refused.stderr, new RegExp(`^edge: cannot connect to NATS at NATS_URL \\(${natsUrl} as EDGE_NATS_USER=service with EDGE_NATS_PASS\\): Authorization Violation`))
  plain(t, refused, 1)

  // Core reaches NATS, then not PostgreSQL; at debug level the full error is on stdout, still without the password.
  const r = await run('core', { NATS_URL: natsUrl, CORE_NATS_USER: 'service', CORE_NATS_PASS: 'right-password', DATABASE_URL: `postgres://docflow:${SECRET}@127.0.0.1:${closedPort}/docflow`, LOG_LEVEL: 'debug' })
  t.equal(r.code, 1)
  t.match(r.stderr, new RegExp(`^core: cannot connect to PostgreSQL at DATABASE_URL \\(postgres://docflow:\\[redacted\\]@127\\.0\\.0\\.1:${closedPort}/docflow\\): connect ECONNREFUSED`))
  plain(t, r, 1)
  const logged = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { level: number; msg: string; err?: { stack?: string } })
  t.ok(logged.some((l) => l.level === 20 && l.msg.startsWith('cannot connect to PostgreSQL') && l.err?.stack?.includes('ECONNREFUSED')), 'the full error at debug level')
})
