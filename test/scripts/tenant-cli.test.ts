import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
// No stack in it: a wrong command line is refused before anything is reached.
const dataDir = mkdtempSync(join(tmpdir(), 'docflow-tenant-cli-'))
t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))

/** Runs `npm run tenant -- <args>` (the script itself) and returns its exit code and stderr lines. */
function tenantCli(args: string[]): Promise<{ code: number; stderr: string[] }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts/tenant.ts'), ...args], { cwd: ROOT, env: { ...process.env, DOCFLOW_DATA_DIR: dataDir }, timeout: 30_000 }, (err, _stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stderr: stderr.split('\n').filter((l) => l.trim() !== '') })
    })
  })
}

t.test('scripts - tenant refuses a storage quota without a unit or below 1 MiB: exit 2, one line', async (t) => {
  for (const args of [
    ['add', 'tiny', '--max-storage', '10'],
    ['quota', 'acme', '--max-storage', '5'],
  ]) {
    const run = await tenantCli(args)
    t.equal(run.code, 2, args.join(' '))
    t.match(run.stderr, [/^docflow tenant: --max-storage: not a size: "\d+" \(a number and a unit/], `one line: ${run.stderr.join(' / ')}`)
    t.equal(run.stderr.length, 1)
  }
  const small = await tenantCli(['quota', 'acme', '--max-storage', '512KiB'])
  t.equal(small.code, 2, 'below 1 MiB')
  t.match(small.stderr, [/^docflow tenant: --max-storage 512KiB is below the smallest quota, 1MB/], `one line: ${small.stderr.join(' / ')}`)
  t.equal(small.stderr.length, 1)
})

t.test('scripts - tenant revoke refuses an empty --user or --token: exit 2, one line', async (t) => {
  for (const option of ['--user', '--token']) {
    const run = await tenantCli(['revoke', 'acme', option, ''])
    t.equal(run.code, 2, option)
    t.match(run.stderr, [new RegExp(`^docflow tenant: bad ${option}: `)], `one line: ${run.stderr.join(' / ')}`)
    t.equal(run.stderr.length, 1)
  }
})

t.test("scripts - tenant refuses a tenant whose NATS users would take a service user's name", async (t) => {
  const run = await tenantCli(['add', 'svc'])
  t.equal(run.code, 2)
  t.match(run.stderr, [/^docflow tenant: bad tenant name "svc": .*reserved.*svc-admin/], `one line: ${run.stderr.join(' / ')}`)
  t.equal(run.stderr.length, 1)
})
