// Core gets SIGTERM while its commit waits on a frozen PostgreSQL (which never answers): it exits
// by CORE_STOP_DEADLINE_MS, leaving the uncommitted batch unacked, and the next core commits
// everything typed, each character once.
import t from 'tap'
import { readFileSync, readdirSync } from 'node:fs'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient, type TestClient } from '../helpers/client.ts'
import { opLogProblems } from '../helpers/typed.ts'
import { exited } from '../../scripts/lib/proc.ts'

const DEADLINE_MS = 3_000
const stack = await setup()
t.teardown(() => stack.cleanup())

/** The postmaster and every backend of this stack's cluster. */
function pgPids(): number[] {
  const root = stack.pg.process.pid!
  const parentOf = (pid: number) => {
    try {
      return Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[1])
    } catch {
      return null // gone meanwhile
    }
  }
  return [root, ...readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map(Number).filter((pid) => parentOf(pid) === root)]
}

t.test('core - SIGTERM while PostgreSQL is frozen: core exits by its deadline; the next core loses and duplicates nothing', async (t) => {
  process.env.CORE_STOP_DEADLINE_MS = String(DEADLINE_MS)
  const core = await stack.process('core')
  delete process.env.CORE_STOP_DEADLINE_MS
  const edge = await stack.edge()
  const tok = await token({ tenant: 'acme' })
  const clients: { c: TestClient; docId: string; typed: string }[] = []
  for (let i = 0; i < 3; i++) {
    const c = yclient(edge.url, `frozen-${i}`, tok)
    clients.push({ c, docId: `frozen-${i}`, typed: '' })
    await c.synced()
  }
  t.teardown(() => clients.forEach((w) => w.c.destroy()))
  let typing = true
  const typed = Promise.all(clients.map(async (w, i) => {
    for (let k = 0; typing; k++) {
      const ch = String.fromCharCode(97 + ((i + k) % 26))
      w.c.text.insert(w.c.text.length, ch)
      w.typed += ch
      await new Promise((r) => setTimeout(r, 15))
    }
  }))
  await new Promise((r) => setTimeout(r, 1_000))
  const pids = pgPids()
  for (const pid of pids) process.kill(pid, 'SIGSTOP')
  let resumed = false
  const resume = () => {
    if (resumed) return
    resumed = true
    for (const pid of pids) process.kill(pid, 'SIGCONT')
  }
  t.teardown(resume)
  await new Promise((r) => setTimeout(r, 300)) // a commit is now waiting on PostgreSQL
  const termAt = Date.now()
  core.child.kill('SIGTERM')
  let exitedAfterMs: number | null = null
  const exit = exited(core.child).then(() => (exitedAfterMs = Date.now() - termAt))
  await Promise.race([exit, new Promise((r) => setTimeout(r, DEADLINE_MS + 5_000))])
  t.ok(exitedAfterMs !== null, `core exited ${exitedAfterMs ?? 'not'} ms after SIGTERM, PostgreSQL frozen (deadline ${DEADLINE_MS} ms)`)
  t.equal(core.child.exitCode, 1, 'with 1: its stop did not finish')
  resume()
  await exit
  const next = await stack.process('core')
  typing = false
  await typed
  for (const { docId, typed } of clients) {
    await until(`${docId} materialized`, async () => (await materializedText(next.url, docId, tok).catch(() => null)) === typed, 30_000)
    t.same(await opLogProblems(stack.db, 'acme', docId, typed), [], `${docId}: every character in the op log once`)
  }
  await next.kill9()
  await edge.stop()
})
