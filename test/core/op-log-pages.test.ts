import t from 'tap'
import type pg from 'pg'
import { randomBytes } from 'node:crypto'
import { setup } from '../helpers/setup.ts'
import { docRows, docUpdatePages } from '../../core/op-log-rows.ts'
import { migrate } from '../../core/migrate.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const client = await stack.db.connect()
await migrate(client)
client.release()

t.test('core - op-log pages hold at most 4 MiB of updates past their first row, for replays and for blame and rollback alike', async (t) => {
  // Ten rows of 1.5 MiB: one query of 1,000 or 5,000 rows would hold all 15 MiB at once.
  const updates = Array.from({ length: 10 }, () => randomBytes(1.5 * 1024 ** 2))
  await stack.db.query(
    `INSERT INTO op_log (tenant, doc_id, stream_seq, msg_id, user_id, edge_id, update, status, ingest_ts)
     SELECT 'acme', 'pages/large', s, m, 'pat', 'seed', u, 'applied', now() FROM unnest($1::bigint[], $2::text[], $3::bytea[]) AS x(s, m, u)`,
    [updates.map((_, i) => 100 + i), updates.map((_, i) => `large-${i}`), updates],
  )
  // The rows each query brought back.
  let fetched: number[] = []
  const pool = { query: async (...args: Parameters<pg.Pool['query']>) => {
    const r = await (stack.db.query as (...a: unknown[]) => Promise<pg.QueryResult>)(...args)
    fetched.push(r.rows.length)
    return r
  } } as unknown as pg.Pool
  const pages: number[] = []
  for await (const page of docUpdatePages(pool, 'acme', 'pages/large', { afterSeq: 0, uptoSeq: 1_000 })) pages.push(page.length)
  t.same(pages, [3, 3, 3, 1], 'replay pages of 3 rows: a 4th would pass 4 MiB')
  t.same(fetched, [3, 3, 3, 1], 'and no query fetched more')
  fetched = []
  const seqs: number[] = []
  for await (const row of docRows(pool, 'acme', 'pages/large', { afterSeq: 101, uptoSeq: 108 })) {
    t.ok(Buffer.from(row.update).equals(updates[row.seq - 100]!), `row ${row.seq} whole`)
    seqs.push(row.seq)
  }
  t.same(seqs, [102, 103, 104, 105, 106, 107, 108], 'blame and rollback rows: every row in the range, in order, once')
  t.same(fetched, [3, 3, 1], 'a query at a time, none past 4 MiB')
})
