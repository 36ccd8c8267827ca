import t from 'tap'
import { CloseCode } from '../../contracts/mod.ts'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient, type TestClient } from '../helpers/client.ts'
import { opLogProblems } from '../helpers/typed.ts'
import { exited, freePort } from '../../scripts/lib/proc.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()

const connectionsAt = async (opsUrl: string) => Number(/^docflow_edge_connections(?:\{[^}]*\})? (\d+)/m.exec(await (await fetch(`${opsUrl}/metrics`)).text())?.[1] ?? NaN)

t.test('edge - SIGTERM under typing: sockets close with 1012, clients carry on through the other edge on the port, nothing is lost', async (t) => {
  const port = await freePort()
  const first = await stack.process('edge', port)
  const second = await stack.process('edge', port) // same port (SO_REUSEPORT): the kernel spreads sockets
  const tok = await token({ tenant: 'acme' })
  const clients: { c: TestClient; docId: string; typed: string; closes: number[] }[] = []
  t.teardown(() => clients.forEach(({ c }) => c.destroy()))
  // Open clients until the edge we stop holds some of them.
  while (clients.length < 4 || (await connectionsAt(first.opsUrl!)) === 0) {
    if (clients.length >= 40) throw new Error('no client landed on the first edge')
    const docId = `drain-${clients.length}`
    const c = yclient(first.url, docId, tok)
    const entry = { c, docId, typed: '', closes: [] as number[] }
    c.provider.on('connection-close', ((e: { code: number } | null) => e && entry.closes.push(e.code)) as never)
    clients.push(entry)
    await c.synced()
  }
  const onFirst = await connectionsAt(first.opsUrl!)

  let stop = false
  const typing = Promise.all(
    clients.map(async (entry, i) => {
      for (let n = 0; !stop; n++) {
        const ch = String.fromCharCode(97 + ((i + n) % 26))
        entry.c.text.insert(entry.c.text.length, ch)
        entry.typed += ch
        await new Promise((r) => setTimeout(r, 15))
      }
    }),
  )
  await new Promise((r) => setTimeout(r, 800))
  first.child.kill('SIGTERM')
  await exited(first.child)
  t.equal(first.child.exitCode, 0, 'the edge drained and exited cleanly')
  await new Promise((r) => setTimeout(r, 1_500)) // typing goes on through the second edge
  stop = true
  await typing

  const restarted = clients.filter(({ closes }) => closes.includes(CloseCode.ServiceRestart))
  t.equal(restarted.length, onFirst, `the ${onFirst} clients of the stopped edge were told 1012`)
  await until('every client is connected again', () => clients.every(({ c }) => c.provider.wsconnected), 15_000)
  for (const { c, docId, typed } of clients) {
    await until(`${docId}: everything typed is materialized`, async () => (await materializedText(core.url, docId, tok).catch(() => null)) === typed, 20_000)
    t.equal(c.text.toString(), typed, `${docId}: the client holds what it typed`)
    t.same(await opLogProblems(stack.db, 'acme', docId, typed), [], `${docId}: each of ${typed.length} characters logged once`)
  }
  t.ok(await connectionsAt(second.opsUrl!) >= clients.length, 'the second edge holds every client now')
})
