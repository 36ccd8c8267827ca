import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { JWT_SECRET, token } from '../helpers/setup.ts'
import { materializedText, until, yclient, type TestClient } from '../helpers/client.ts'
import { postmasterPidFile } from '../../scripts/lib/postgres.ts'
import { GaveUp, alive, exited, freePorts, waitFor } from '../../scripts/lib/proc.ts'
import { SUPERVISOR_BUNDLE } from '../../scripts/lib/supervisor-bundle.mjs'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

/** Types `text` at the end of the document, one character per `gapMs`, running `during` after `at` characters. */
async function type(c: TestClient, text: string, gapMs: number, during: { at: number; run: () => void }) {
  for (let i = 0; i < text.length; i++) {
    if (i === during.at) during.run()
    c.text.insert(c.text.length, text[i]!)
    await new Promise((r) => setTimeout(r, gapMs))
  }
}

const firstPid = (file: string) => Number(readFileSync(file, 'utf8').split('\n')[0])

/** Output and exit code of `child`, which must exit within `timeoutMs` (a second start that took over would run on). */
async function finished(child: ChildProcess, timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = ''
  let stderr = ''
  child.stdout?.on('data', (b: Buffer) => (stdout += b.toString()))
  child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()))
  await waitFor('the command to exit', async () => child.exitCode !== null || child.signalCode !== null, timeoutMs).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\n${stdout}${stderr}`)
  })
  return { code: child.exitCode, stdout, stderr }
}

t.test('scripts - npm start brings back nats-server and PostgreSQL after kill -9 under typing, refuses a second start, and npm stop stops every part', async (t) => {
  // A private (0700) data folder, as a fresh clone under /root or mkdtemp has.
  const dataDir = mkdtempSync(join(tmpdir(), 'docflow-supervised-'))
  const names = ['EDGE_PORT', 'CORE_PORT', 'NATS_PORT', 'NATS_MONITOR_PORT', 'PG_PORT', 'EDGE_OPS_PORT', 'CORE_OPS_PORT'] as const
  const free = await freePorts(names.length)
  const ports = Object.fromEntries(names.map((name, i) => [name, free[i]!])) as Record<(typeof names)[number], number>
  const env: NodeJS.ProcessEnv = { ...process.env, ...Object.fromEntries(Object.entries(ports).map(([k, v]) => [k, String(v)])), DOCFLOW_DATA_DIR: dataDir, DOCFLOW_JWT_SECRET: JWT_SECRET, LOG_LEVEL: 'warn' }
  delete env.DATABASE_URL // the test is about the PostgreSQL npm start runs
  // As npm start runs it: the bootstrap, which runs the supervisor bundled, without the tsx loader.
  const npmStart = () => spawn(process.execPath, [join(ROOT, 'scripts/bootstrap.mjs'), 'start'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  const supervisor = npmStart()
  const others: ChildProcess[] = []
  let output = ''
  supervisor.stdout.on('data', (b: Buffer) => (output += b.toString()))
  supervisor.stderr.on('data', (b: Buffer) => (output += b.toString()))
  const clusterLocation = join(dataDir, 'pg', 'cluster-location')
  const clusterDir = () => (existsSync(clusterLocation) ? readFileSync(clusterLocation, 'utf8').trim() : null)
  let clients: TestClient[] = []
  t.teardown(async () => {
    for (const c of clients) c.destroy()
    for (const child of [...others, supervisor]) {
      if (child.exitCode !== null || child.signalCode !== null) continue
      child.kill('SIGTERM')
      await exited(child)
    }
    const cluster = clusterDir()
    if (cluster) rmSync(cluster, { recursive: true, force: true })
    rmSync(dataDir, { recursive: true, force: true })
  })

  await waitFor('the start banner', async () => {
    if (supervisor.exitCode !== null) throw new GaveUp(`npm start exited with ${supervisor.exitCode}:\n${output}`)
    return output.includes('DocFlow is running.')
  }, 120_000).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\n${output}`)
  })
  t.equal((await fetch(`http://127.0.0.1:${ports.EDGE_PORT}/healthz`)).status, 200, 'edge healthy')
  t.equal((await fetch(`http://127.0.0.1:${ports.CORE_PORT}/healthz`)).status, 200, 'core healthy')

  const tok = await token({ tenant: 'acme' })
  const coreUrl = `http://127.0.0.1:${ports.CORE_PORT}`
  const c = yclient(`ws://127.0.0.1:${ports.EDGE_PORT}`, 'supervised', tok)
  clients = [c]
  await c.synced()
  let typed = ''
  const materializedAll = (what: string) =>
    until(what, async () => (await materializedText(coreUrl, 'supervised', tok).catch(() => null)) === typed, 120_000).catch(async (err: unknown) => {
      throw new Error(`${(err as Error).message}: materialized ${JSON.stringify(await materializedText(coreUrl, 'supervised', tok).catch(() => null))}, typed ${JSON.stringify(typed)}\n${output}`)
    })

  const natsPid = firstPid(join(dataDir, 'nats', 'nats-server.pid'))
  const first = 'nats-server dies mid-sentence and comes back. '
  await type(c, first, 15, { at: 15, run: () => process.kill(natsPid, 'SIGKILL') })
  typed += first
  await materializedAll('everything typed across the nats-server kill materialized')
  // The supervisor says "back" once its own readiness probe passes, which can come after the
  // clients' edits already went through: wait for the line rather than expect it by now.
  await until('the supervisor logged the nats-server restart', () => /nats-server: back after restart 1/.test(output), 30_000)
  t.not(firstPid(join(dataDir, 'nats', 'nats-server.pid')), natsPid, 'a new nats-server runs')

  const pgPid = firstPid(postmasterPidFile(join(dataDir, 'pg')))
  const second = 'PostgreSQL dies too, and nothing is lost. '
  await type(c, second, 15, { at: 15, run: () => process.kill(pgPid, 'SIGKILL') })
  typed += second
  await materializedAll('everything typed across the PostgreSQL kill materialized')
  await until('the supervisor logged the PostgreSQL restart', () => /postgres: back after restart 1/.test(output), 30_000)
  t.equal(c.text.toString(), typed, 'the client holds exactly what it typed')

  const pids = Object.fromEntries(['edge', 'core', 'nats-server', 'postgres'].map((name) => [name, firstPid(join(dataDir, 'run', `${name}.pid`))]))
  for (const [name, pid] of Object.entries(pids)) t.ok(pid > 0 && alive(pid), `${name} runs (pid ${pid})`)

  // A second npm start while this one runs says so and exits, touching nothing: through the
  // bootstrap, and through the bundled supervisor itself (a start that raced past the bootstrap's check).
  const supervisorPid = firstPid(join(dataDir, 'docflow.pid'))
  const coreMain = join(dataDir, 'dist', 'core', 'main.js')
  const builtAt = statSync(coreMain).mtimeMs
  const outputBefore = output.length
  const bundled = join(ROOT, 'scripts', SUPERVISOR_BUNDLE) // as npm start's bootstrap left it
  for (const [how, secondStart] of [
    ['npm start', npmStart],
    ['the bundled supervisor', () => spawn(process.execPath, [bundled], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })],
  ] as const) {
    const second = secondStart()
    others.push(second)
    const refused = await finished(second, 60_000)
    t.equal(refused.code, 1, `${how}: a second start exits 1`)
    t.same(refused.stderr.trimEnd().split('\n'), [`docflow: already running in ${dataDir} (pid ${supervisorPid}); stop it with \`npm stop\` or Ctrl-C in its terminal`], `${how}: one line naming the running supervisor`)
    t.notMatch(refused.stdout, /starting|compiling/, `${how}: starts nothing`)
  }
  t.equal(statSync(coreMain).mtimeMs, builtAt, 'the running stack keeps its dist/')
  for (const [name, pid] of Object.entries(pids)) t.ok(alive(pid), `${name} (pid ${pid}) still runs`)
  t.equal((await fetch(`http://127.0.0.1:${ports.CORE_PORT}/healthz`)).status, 200, 'core still healthy')
  t.equal(output.slice(outputBefore), '', 'no part of the running stack exited')

  c.destroy()
  clients = []
  const stop = await finished(spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts/stop.ts')], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] }), 60_000)
  t.equal(stop.code, 0)
  t.match(stop.stdout, new RegExp(`^docflow: stopping \\(pid ${supervisorPid}\\)\\.* stopped`), 'npm stop asked the bundled supervisor to stop')
  await exited(supervisor)
  t.equal(supervisor.exitCode, 0, 'the supervisor drained and exited cleanly')
  for (const [name, pid] of Object.entries(pids)) t.notOk(alive(pid), `${name} (pid ${pid}) stopped`)
  t.match(output, /docflow: stopped/)

  // The data folder keeps the partition count it was provisioned with.
  const again = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts/start.ts')], { cwd: ROOT, env: { ...env, DOCFLOW_EDIT_PARTITIONS: '64' }, stdio: ['ignore', 'pipe', 'pipe'] })
  let refused = ''
  again.stdout.on('data', (b: Buffer) => (refused += b.toString()))
  again.stderr.on('data', (b: Buffer) => (refused += b.toString()))
  await exited(again)
  t.equal(again.exitCode, 1, 'npm start refuses another partition count for this data folder')
  t.match(refused, /was provisioned with 4 edit partitions; DOCFLOW_EDIT_PARTITIONS=64 would move documents/)
})
