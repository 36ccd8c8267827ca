import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { dataDirOf } from '../../scripts/lib/data-dir.mjs'
import { OpsContext } from '../../scripts/lib/ops-context.ts'
import { freePort } from '../../scripts/lib/proc.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const DEFAULT = join(ROOT, 'data')

t.test('scripts - DOCFLOW_DATA_DIR set but empty means <project>/data, as npm start reads it, never the current folder', async (t) => {
  t.equal(dataDirOf({ DOCFLOW_DATA_DIR: '' }), DEFAULT, 'empty')
  t.equal(dataDirOf({}), DEFAULT, 'unset')
  t.equal(dataDirOf({ DOCFLOW_DATA_DIR: '/srv/docflow' }), '/srv/docflow', 'set')
  t.equal(new OpsContext({ DOCFLOW_DATA_DIR: '' }).dataDir, DEFAULT, 'npm run docflow')

  // npm run tenant, run from a folder that holds a stack's nats-server settings: it must not take them.
  const cwd = mkdtempSync(join(tmpdir(), 'docflow-data-dir-'))
  t.teardown(() => rmSync(cwd, { recursive: true, force: true }))
  const decoyPort = await freePort()
  mkdirSync(join(cwd, 'nats'))
  writeFileSync(join(cwd, 'nats', 'server.json'), JSON.stringify({ port: decoyPort }))
  // The loader by path: `--import tsx` resolves from the current folder.
  const run = await new Promise<{ code: number; stderr: string }>((resolve) => {
    execFile(process.execPath, ['--import', import.meta.resolve('tsx'), join(ROOT, 'scripts/tenant.ts'), 'list'], { cwd, env: { ...process.env, DOCFLOW_DATA_DIR: '' }, timeout: 30_000 }, (err, _stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stderr })
    })
  })
  // Whatever <project>/data holds (nothing, a stopped stack, a running one), only the decoy names that port.
  t.ok(run.code === 0 || run.stderr.startsWith('docflow tenant: '), `npm run tenant ran: ${run.stderr.trim()}`)
  t.notMatch(run.stderr, new RegExp(`\\b${decoyPort}\\b`), `npm run tenant looked at ${DEFAULT}, not the current folder: ${run.stderr.trim()}`)
})

t.test('scripts - bundled beside scripts/start.ts as npm start runs its supervisor, the default data folder is still <project>/data', async (t) => {
  // The supervisor is this code inlined into scripts/.supervisor.mjs (scripts/lib/supervisor-bundle.mjs).
  const out = join(ROOT, 'scripts', `.data-dir-probe-${process.pid}.mjs`)
  t.teardown(() => rmSync(out, { force: true }))
  const { build, stop } = await import('esbuild')
  try {
    await build({ stdin: { contents: "import { DEFAULT_DATA_DIR } from './lib/data-dir.mjs'\nconsole.log(DEFAULT_DATA_DIR)", resolveDir: join(ROOT, 'scripts'), loader: 'js' }, outfile: out, bundle: true, packages: 'external', platform: 'node', format: 'esm', logLevel: 'error' })
  } finally {
    await stop()
  }
  const printed = await new Promise<string>((resolve, reject) => execFile(process.execPath, [out], (err, stdout) => (err ? reject(err) : resolve(stdout.trim()))))
  t.equal(printed, DEFAULT)
})
