import t from 'tap'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Kvm } from '@nats-io/kv'
import { REVOCATIONS_BUCKET, ServiceUser } from '../../contracts/mod.ts'
import { setup } from '../helpers/setup.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const stack = await setup()
t.teardown(() => stack.cleanup())
const revocations = await new Kvm(await stack.connect(ServiceUser.Admin)).open(REVOCATIONS_BUCKET)

/** Runs `npm run tenant -- <args>` (the script itself) against this stack. */
function tenantCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string[] }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts/tenant.ts'), ...args], { cwd: ROOT, env: { ...process.env, DOCFLOW_DATA_DIR: stack.dir }, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr: stderr.split('\n').filter((l) => l.trim() !== '') })
    })
  })
}

const revokedKeys = async () => {
  const keys: string[] = []
  for await (const key of await revocations.keys()) keys.push(key)
  return keys.sort()
}

t.test('scripts - tenant revoke refuses a tenant the registry does not know: exit 1, one line, nothing revoked', async (t) => {
  const typo = await tenantCli(['revoke', 'acmee'])
  t.equal(typo.code, 1)
  t.same(typo.stderr, ['docflow tenant: unknown tenant acmee'])
  t.notMatch(typo.stdout, /revoked/, 'no success reported')
  const user = await tenantCli(['revoke', 'nope', '--user', 'alice'])
  t.equal(user.code, 1, 'a user of an unknown tenant too')
  t.same(user.stderr, ['docflow tenant: unknown tenant nope'])
  t.same(await revokedKeys(), [], 'no revocation written')
  await t.rejects(stack.provisioner.revoke({ tenant: 'acmee' }), /unknown tenant acmee/, 'the provisioner refuses it itself')

  const meant = await tenantCli(['revoke', 'acme'])
  t.equal(meant.code, 0, meant.stderr.join(' / '))
  t.match(meant.stdout, /^acme: revoked every token issued until now/)
  t.same(await revokedKeys(), ['acme.all'], 'a known tenant is revoked')
})
