// `npm run token`'s --ttl errors say what is wrong with the value given.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

/** Runs scripts/token.ts with `args`. */
function token(...args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', 'scripts/token.ts', '--tenant', 'acme', ...args], { cwd: ROOT, env: { PATH: process.env.PATH }, encoding: 'utf8' })
}

t.test('scripts - token refuses a ttl of zero as not positive, a long one as over the limit', async (t) => {
  for (const ttl of ['0s', '0d']) {
    const r = token('--ttl', ttl)
    t.equal(r.status, 2, ttl)
    t.match(r.stderr, /ttl: must be positive/, ttl)
    t.notMatch(r.stderr, /at most/, `${ttl}: not called too long`)
  }
  const long = token('--ttl', '8d')
  t.equal(long.status, 2)
  t.match(long.stderr, /ttl: at most 7d/)
  t.equal(token('--ttl', '30m').status, 0, 'a positive ttl within the limit mints')
})
