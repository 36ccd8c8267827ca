import t from 'tap'
import { execFile, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { JWT_SECRET, token } from '../helpers/setup.ts'
import { materializedText, until, yclient, type TestClient } from '../helpers/client.ts'
import { alive, exited, freePort, freePorts, waitFor } from '../../scripts/lib/proc.ts'
import { portFree } from '../../scripts/lib/single-instance.ts'
import { postmasterPidFile } from '../../scripts/lib/postgres.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

/** A gauge's value on the ops port `port`. */
async function gaugeOf(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  return Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)`, 'm').exec(text)?.[1] ?? NaN)
}
const connectionsOf = (port: number) => gaugeOf(port, 'docflow_edge_connections')

t.test('scripts - EDGE_PROCESSES=2 runs two edges on one port, CORE_PROCESSES=2 two cores sharing the partitions; clients spread over both converge', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'docflow-edges-'))
  const ports = { EDGE_PORT: 0, CORE_PORT: 0, NATS_PORT: 0, NATS_MONITOR_PORT: 0, PG_PORT: 0, EDGE_OPS_PORT: 0, CORE_OPS_PORT: 0 }
  const free = await freePorts(Object.keys(ports).length)
  for (const [i, name] of (Object.keys(ports) as (keyof typeof ports)[]).entries()) ports[name] = free[i]!
  // The second edge's ops port is EDGE_OPS_PORT - 1.
  while (!(await portFree(ports.EDGE_OPS_PORT - 1)) || Object.values(ports).includes(ports.EDGE_OPS_PORT - 1)) ports.EDGE_OPS_PORT = await freePort()
  // The second core's ports are CORE_PORT + 1 and CORE_OPS_PORT + 1.
  for (const name of ['CORE_PORT', 'CORE_OPS_PORT'] as const) {
    while (!(await portFree(ports[name] + 1)) || [...Object.values(ports), ports.EDGE_OPS_PORT - 1].includes(ports[name] + 1)) ports[name] = await freePort()
  }
  const env: NodeJS.ProcessEnv = { ...process.env, ...Object.fromEntries(Object.entries(ports).map(([k, v]) => [k, String(v)])), EDGE_PROCESSES: '2', CORE_PROCESSES: '2', DOCFLOW_DATA_DIR: dataDir, DOCFLOW_JWT_SECRET: JWT_SECRET, LOG_LEVEL: 'warn' }
  delete env.DATABASE_URL
  const supervisor = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts/start.ts')], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  supervisor.stdout.on('data', (b: Buffer) => (output += b.toString()))
  supervisor.stderr.on('data', (b: Buffer) => (output += b.toString()))
  const clients: TestClient[] = []
  t.teardown(async () => {
    for (const c of clients) c.destroy()
    if (supervisor.exitCode === null && supervisor.signalCode === null) {
      supervisor.kill('SIGTERM')
      await exited(supervisor)
    }
    const location = join(dataDir, 'pg', 'cluster-location')
    if (existsSync(location)) rmSync(readFileSync(location, 'utf8').trim(), { recursive: true, force: true })
    rmSync(dataDir, { recursive: true, force: true })
  })
  await waitFor('the start banner', async () => {
    if (supervisor.exitCode !== null) throw new Error(`npm start exited: ${output}`)
    return output.includes('DocFlow is running')
  }, 240_000)
  t.match(output, /2 edge processes share the port/)
  const edgePids = ['edge', 'edge-2'].map((name) => Number(readFileSync(join(dataDir, 'run', `${name}.pid`), 'utf8')))
  t.ok(edgePids.every(alive) && edgePids[0] !== edgePids[1], `two edge processes (${edgePids.join(', ')})`)
  const corePids = ['core', 'core-2'].map((name) => Number(readFileSync(join(dataDir, 'run', `${name}.pid`), 'utf8')))
  t.ok(corePids.every(alive) && corePids[0] !== corePids[1], `two core processes (${corePids.join(', ')})`)
  const coreOps = [ports.CORE_OPS_PORT, ports.CORE_OPS_PORT + 1]
  await until('the two cores share the partitions', async () => {
    const held = await Promise.all(coreOps.map((p) => gaugeOf(p, 'docflow_core_leases_held')))
    const shares = await Promise.all(coreOps.map((p) => gaugeOf(p, 'docflow_core_fair_share')))
    return held.every((n, i) => n > 0 && n === shares[i])
  }, 20_000)

  // The kernel picks the edge per connection: open clients until both edges hold some.
  const tok = await token({ tenant: 'acme' })
  const edgeUrl = `ws://127.0.0.1:${ports.EDGE_PORT}`
  const opsPorts = [ports.EDGE_OPS_PORT, ports.EDGE_OPS_PORT - 1]
  for (let i = 0; i < 40; i++) {
    const c = yclient(edgeUrl, 'spread', tok)
    clients.push(c)
    await c.synced()
    if (clients.length >= 4 && (await Promise.all(opsPorts.map(connectionsOf))).every((n) => n > 0)) break
  }
  const counts = await Promise.all(opsPorts.map(connectionsOf))
  t.ok(counts.every((n) => n > 0), `clients on both edges: ${counts.join(' + ')}`)
  for (const [i, c] of clients.entries()) c.text.insert(c.text.length, `<${i}>`)
  const expected = clients.map((_, i) => `<${i}>`).sort().join('')
  const sorted = (s: string | null) => (s?.match(/<\d+>/g) ?? []).sort().join('')
  await until('every client holds every edit', () => clients.every((c) => sorted(c.text.toString()) === expected), 20_000)
  t.ok(clients.every((c) => c.text.toString() === clients[0]!.text.toString()), 'and the same text')
  await until('core materialized them all', async () => sorted(await materializedText(`http://127.0.0.1:${ports.CORE_PORT}`, 'spread', tok).catch(() => '')) === expected, 20_000)

  for (const c of clients.splice(0)) c.destroy()
  // Each part runs in its own process group, so a supervisor killed with -9 leaves them running: npm stop stops them.
  const serverPids = [readFileSync(join(dataDir, 'nats', 'nats-server.pid'), 'utf8'), readFileSync(postmasterPidFile(join(dataDir, 'pg')), 'utf8')].map((text) => Number(text.split('\n')[0]))
  supervisor.kill('SIGKILL')
  await exited(supervisor)
  const parts = [...edgePids, ...corePids, ...serverPids]
  t.ok(parts.every(alive), `the parts outlive their supervisor (${parts.join(', ')})`)
  const stop = await new Promise<{ code: number; stdout: string }>((resolve) =>
    execFile(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts/stop.ts')], { cwd: ROOT, env, timeout: 120_000 }, (err, stdout) => resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout })),
  )
  t.equal(stop.code, 0)
  t.equal(stop.stdout, 'docflow: the supervisor was gone; stopped the parts it left running: edge, edge-2, core, core-2, postgres, nats-server\n', 'npm stop says what it stopped')
  t.ok(parts.every((pid) => !alive(pid)), 'both edges, both cores, PostgreSQL and nats-server stopped')

  // Two parts on one port are refused before anything starts (the second edge's ops port is CORE_OPS_PORT here).
  const clash = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts/start.ts')], { cwd: ROOT, env: { ...env, CORE_PROCESSES: '1', CORE_OPS_PORT: String(ports.EDGE_OPS_PORT - 1) }, stdio: ['ignore', 'pipe', 'pipe'] })
  let refused = ''
  clash.stderr.on('data', (b: Buffer) => (refused += b.toString()))
  await exited(clash)
  t.equal(clash.exitCode, 1)
  t.ok(refused.includes(`EDGE_OPS_PORT (${ports.EDGE_OPS_PORT} - 1 for edge 2 of EDGE_PROCESSES) and CORE_OPS_PORT are both ${ports.EDGE_OPS_PORT - 1}`), refused)
})
