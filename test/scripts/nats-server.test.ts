// nats-server as npm start and the tests run it: one Go scheduler thread (GOMAXPROCS=1) unless
// the environment sets GOMAXPROCS, read back from the server's own /varz.
import t from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startNatsServer } from '../../scripts/lib/nats-server.ts'
import { freePort } from '../../scripts/lib/proc.ts'

const home = mkdtempSync(join(tmpdir(), 'docflow-nats-procs-'))
t.teardown(() => rmSync(home, { recursive: true, force: true }))

async function goMaxProcs(name: string): Promise<number> {
  const server = await startNatsServer({ dir: join(home, name), port: await freePort(), monitorPort: await freePort(), maxFileStore: '1GB', serviceMaxFileBytes: 64 * 1024 ** 2 })
  try {
    const varz = (await (await fetch(`http://127.0.0.1:${server.monitorPort}/varz`)).json()) as { gomaxprocs: number }
    return varz.gomaxprocs
  } finally {
    await server.stop()
  }
}

t.test('nats-server runs with one Go scheduler thread unless GOMAXPROCS is set', async (t) => {
  const before = process.env.GOMAXPROCS
  t.teardown(() => {
    if (before === undefined) delete process.env.GOMAXPROCS
    else process.env.GOMAXPROCS = before
  })
  delete process.env.GOMAXPROCS
  t.equal(await goMaxProcs('default'), 1, 'one Go scheduler thread by default')
  process.env.GOMAXPROCS = '2'
  t.equal(await goMaxProcs('from-env'), 2, 'GOMAXPROCS from the environment wins')
})
