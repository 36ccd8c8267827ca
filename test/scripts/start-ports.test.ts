import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePorts } from '../../scripts/lib/proc.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const home = mkdtempSync(join(tmpdir(), 'docflow-start-ports-'))
t.teardown(() => rmSync(home, { recursive: true, force: true }))

/** Runs npm start's supervisor with `settings` on free ports and a data folder of its own; its exit code and stderr lines. */
async function start(dataDir: string, settings: Record<string, string>): Promise<{ code: number; stderr: string[] }> {
  const names = ['EDGE_PORT', 'CORE_PORT', 'NATS_PORT', 'NATS_MONITOR_PORT', 'PG_PORT', 'EDGE_OPS_PORT', 'CORE_OPS_PORT']
  const free = await freePorts(names.length)
  const env: NodeJS.ProcessEnv = { ...process.env, ...Object.fromEntries(names.map((name, i) => [name, String(free[i])])), DOCFLOW_DATA_DIR: dataDir, ...settings }
  delete env.DATABASE_URL
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts/start.ts')], { cwd: ROOT, env, timeout: 60_000 }, (err, _stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stderr: stderr.split('\n').filter((l) => l.trim() !== '') })
    })
  })
}

t.test('scripts - npm start refuses a port derived outside 1-65535 before it touches anything: one line, exit 2', async (t) => {
  const cases: [Record<string, string>, string][] = [
    [{ CORE_PORT: '65535', CORE_PROCESSES: '2' }, 'CORE_PORT (65535 + 1 for core 2 of CORE_PROCESSES) is 65536'],
    [{ CORE_OPS_PORT: '65534', CORE_PROCESSES: '3' }, 'CORE_OPS_PORT (65534 + 2 for core 3 of CORE_PROCESSES) is 65536'],
    [{ EDGE_OPS_PORT: '1', EDGE_PROCESSES: '2' }, 'EDGE_OPS_PORT (1 - 1 for edge 2 of EDGE_PROCESSES) is 0'],
    [{ EDGE_PORT: '1', EDGE_PROCESSES: '2', EDGE_PORT_PER_PROCESS: 'true' }, 'EDGE_PORT (1 - 1 for edge 2, EDGE_PORT_PER_PROCESS) is 0'],
  ]
  for (const [i, [settings, derived]] of cases.entries()) {
    const dataDir = join(home, `case-${i}`)
    const run = await start(dataDir, settings)
    const what = Object.entries(settings).map(([k, v]) => `${k}=${v}`).join(' ')
    t.equal(run.code, 2, what)
    t.equal(run.stderr.length, 1, `one line: ${run.stderr.join(' / ')}`)
    t.ok(run.stderr[0]?.startsWith(`docflow: ${derived}, outside 1-65535; `), run.stderr.join(' / '))
    t.notOk(existsSync(dataDir), 'no data folder, pid file or log made')
  }
})
