import t, { type Test } from 'tap'
import { setup, token } from '../helpers/setup.ts'
import { materializedText, until, yclient } from '../helpers/client.ts'
import { opLogProblems, textDifference } from '../helpers/typed.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())

/**
 * Asserts that `typed` is, character by character, what the read API materialized and what the
 * op log's updates replay to, and that the op log inserts each typed character exactly once.
 */
async function assertKeptOnce(t: Test, coreUrl: string, docId: string, tok: string, typed: string) {
  t.equal(textDifference(await materializedText(coreUrl, docId, tok), typed), null, 'materialized text is exactly what was typed')
  t.same(await opLogProblems(stack.db, 'acme', docId, typed), [], 'the op log holds every typed character once')
}

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
  await until('materialized text equals what was typed', async () => (await materializedText(core.url, 'typing', tok)) === text, 60_000).catch((err: unknown) => t.comment((err as Error).message))
  await assertKeptOnce(t, core.url, 'typing', tok, text)
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
  await until('materialized text equals what was typed', async () => (await materializedText(core.url, 'whole-stack', tok)) === text, 90_000).catch((err: unknown) => t.comment((err as Error).message))
  await assertKeptOnce(t, core.url, 'whole-stack', tok, text)
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

t.test('core - the crash tests\' check fails on a doubled or a missing character in the op log', async (t) => {
  const tok = await token({ tenant: 'acme' })
  const core = await stack.core()
  const edge = await stack.edge()
  const c = yclient(edge.url, 'check', tok)
  t.teardown(() => c.destroy())
  await c.synced()
  const text = 'abcdefgh'
  await type(c, text, 5)
  await until('materialized', async () => (await materializedText(core.url, 'check', tok)) === text)
  t.same(await opLogProblems(stack.db, 'acme', 'check', text), [], 'the real op log passes')
  await edge.stop()
  await core.stop()
  const copy = (docId: string, where: string, msgSuffix = '') =>
    stack.db.query(
      `INSERT INTO op_log (tenant, doc_id, stream_seq, msg_id, user_id, edge_id, update, status, ingest_ts)
       SELECT tenant, $1, stream_seq, msg_id || $2, user_id, edge_id, update, status, ingest_ts FROM op_log WHERE tenant = 'acme' AND doc_id = 'check' ${where}`,
      [docId, msgSuffix],
    )
  await copy('check-doubled', '')
  await copy('check-doubled', 'ORDER BY stream_seq OFFSET 3 LIMIT 1', ':retry')
  const doubled = await opLogProblems(stack.db, 'acme', 'check-doubled', text)
  t.match(doubled, [/inserts 9 characters over \d+ updates; 8 were typed/], 'one update logged again under another id is caught (its replay alone would hide it)')
  await copy('check-missing', "AND stream_seq <> (SELECT stream_seq FROM op_log WHERE tenant = 'acme' AND doc_id = 'check' ORDER BY stream_seq OFFSET 3 LIMIT 1)")
  const missing = await opLogProblems(stack.db, 'acme', 'check-missing', text)
  t.match(missing, [/op-log replay: first difference at character/, /inserts [0-7] characters/], 'one missing update is caught')
  t.match(textDifference('abcdeefgh', text), /first difference at character 5/, 'a doubled materialized character is caught')
})
