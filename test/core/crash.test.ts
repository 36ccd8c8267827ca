import t from 'tap'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())

/** Types `text` one character per `gapMs`, appending at the end like a user. */
async function type(c: ReturnType<typeof yclient>, text: string, gapMs: number, during?: { at: number; run: () => Promise<void> }) {
  for (let i = 0; i < text.length; i++) {
    if (during && i === during.at) void during.run()
    c.text.insert(c.text.length, text[i]!)
    await new Promise((r) => setTimeout(r, gapMs))
  }
}

t.test('core - kill -9 of core while a client types: every character materialized exactly once', async (t) => {
  let core = await stack.process('core')
  const edge = await stack.edge()
  const tok = await token({ tenant: 'acme' })
  const c = yclient(edge.url, 'typing', tok)
  t.teardown(() => c.destroy())
  await c.synced()
  const text = 'The quick brown fox jumps over the lazy dog. '.repeat(4)
  await type(c, text, 8, {
    at: 60,
    run: async () => {
      await core.kill9()
      core = await stack.process('core')
    },
  })
  await until('materialized text equals what was typed', async () => (await materializedText(core.url, 'typing', tok)) === text, 60_000)
  const rows = (await stack.db.query("SELECT count(*)::int AS n, count(DISTINCT msg_id)::int AS d FROM op_log WHERE doc_id = 'typing'")).rows[0]
  t.equal(rows.n, text.length, 'one op-log row per typed character')
  t.equal(rows.d, rows.n, 'no op logged twice')
  await core.kill9()
})

t.test('core - kill -9 of every process (nats, postgres, edge, core) while a client types loses nothing', async (t) => {
  let core = await stack.process('core')
  let edge = await stack.process('edge')
  const tok = await token({ tenant: 'acme' })
  const c = yclient(edge.url, 'whole-stack', tok)
  t.teardown(() => c.destroy())
  await c.synced()
  const text = 'Every keystroke survives a crash of everything. '.repeat(3)
  const edgePort = new URL(edge.url).port
  await type(c, text, 8, {
    at: 50,
    run: async () => {
      await Promise.all([edge.kill9(), core.kill9(), stack.restartNats('SIGKILL'), stack.restartPostgres('SIGKILL')])
      core = await stack.process('core')
      edge = await stack.process('edge', Number(edgePort))
    },
  })
  await until('materialized text equals what the client holds', async () => (await materializedText(core.url, 'whole-stack', tok)) === text, 90_000)
  t.equal(c.text.toString(), text, 'the client kept every character')
  const dup = (await stack.db.query("SELECT count(*)::int AS n FROM (SELECT msg_id FROM op_log WHERE doc_id = 'whole-stack' GROUP BY msg_id HAVING count(*) > 1) d")).rows[0].n
  t.equal(dup, 0, 'no op logged twice')
  await Promise.all([edge.kill9(), core.kill9()])
})

t.test('core - a clean restart of every server keeps all state', async (t) => {
  const tok = await token({ tenant: 'acme' })
  let core = await stack.core()
  let edge = await stack.edge()
  const c = yclient(edge.url, 'restart', tok)
  await c.synced()
  c.text.insert(0, 'kept across restarts')
  await until('materialized', async () => (await materializedText(core.url, 'restart', tok)) === 'kept across restarts')
  c.destroy()
  await edge.stop()
  await core.stop()
  await stack.restartNats('SIGTERM')
  await stack.restartPostgres('SIGINT')
  core = await stack.core()
  edge = await stack.edge()
  t.equal(await materializedText(core.url, 'restart', tok), 'kept across restarts', 'read API after restart')
  const fresh = yclient(edge.url, 'restart', tok)
  t.teardown(() => fresh.destroy())
  await fresh.synced()
  t.equal(fresh.text.toString(), 'kept across restarts', 'a new client gets it from a new edge')
})
