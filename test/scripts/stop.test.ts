import t from 'tap'
import { execFile, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { alive } from '../../scripts/lib/proc.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

/** Runs `npm stop` (the script itself) for `dataDir`; its exit code and stdout. */
function npmStop(dataDir: string): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts/stop.ts')], { cwd: ROOT, env: { ...process.env, DOCFLOW_DATA_DIR: dataDir }, timeout: 60_000 }, (err, stdout) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout })
    })
  })
}

// A stopped stack's pid files stay behind, and pids are recycled: the numbers they hold can name
// any program by the time `npm stop` reads them. (The kill -9 case, with DocFlow's own parts left
// running, is in many-edges.test.ts, which has a stack to kill.)
t.test('scripts - npm stop leaves alone a program that took over the pids a stopped stack recorded', async (t) => {
  const sleeper = spawn('sleep', ['300'], { stdio: 'ignore' })
  t.teardown(() => sleeper.kill('SIGKILL'))
  await new Promise((r) => sleeper.once('spawn', r))
  const records = {
    'a bare pid': `${sleeper.pid}\n`,
    "a supervisor's record": `${sleeper.pid}\n12345 ["/usr/bin/node","${ROOT}scripts/.supervisor.mjs"]\n`,
  }
  for (const [what, record] of Object.entries(records)) {
    const dataDir = mkdtempSync(join(tmpdir(), 'docflow-stop-'))
    t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
    writeFileSync(join(dataDir, 'docflow.pid'), record)
    mkdirSync(join(dataDir, 'run'))
    // Written after the program started, so only its command line tells it from the edge.
    writeFileSync(join(dataDir, 'run', 'edge.pid'), `${sleeper.pid}\n`)
    const stop = await npmStop(dataDir)
    t.equal(stop.code, 0, what)
    t.equal(stop.stdout, `docflow: not running (in ${dataDir})\n`, what)
    await new Promise((r) => setTimeout(r, 200))
    t.ok(alive(sleeper.pid!) && sleeper.exitCode === null && sleeper.signalCode === null, `${what}: the program still runs`)
  }
})
