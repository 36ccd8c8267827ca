import t from 'tap'
import { join } from 'node:path'
import { jetstream } from '@nats-io/jetstream'
import { READ_UNAVAILABLE_RETRY_AFTER_S, READ_UNAVAILABLE_STATUS } from '../../contracts/mod.ts'
import { isDatabaseUnavailable } from '../../core/errors.ts'
import { startPostgres } from '../../scripts/lib/postgres.ts'
import { terminate } from '../../scripts/lib/proc.ts'
import { setup, token } from '../helpers/setup.ts'
import { readState, until } from '../helpers/client.ts'
import { edit, publishEdit } from '../helpers/edits.ts'

const stack = await setup()
t.teardown(() => stack.cleanup())
const core = await stack.core()

/** An error as pg or node:net raises it: a message and, for some, a code. */
const pgError = (message: string, code?: string, cause?: unknown) => Object.assign(new Error(message, cause === undefined ? {} : { cause }), code === undefined ? {} : { code })

t.test('core - what counts as PostgreSQL being out of reach (503) and what stays a failure (500)', async (t) => {
  const unavailable = [
    pgError('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED'),
    pgError('terminating connection due to administrator command', '57P01'),
    pgError('terminating connection because of crash of another server process', '57P02'),
    pgError('the database system is starting up', '57P03'),
    pgError('sorry, too many clients already', '53300'),
    pgError('connection failure', '08006'),
    pgError('Connection terminated unexpectedly'),
    pgError('timeout exceeded when trying to connect'),
    pgError('Connection terminated due to connection timeout', undefined, pgError('timeout expired')),
    pgError('read failed', undefined, pgError('read ECONNRESET', 'ECONNRESET')),
  ]
  for (const err of unavailable) t.ok(isDatabaseUnavailable(err), `${err.message}${err.cause ? ` (${(err.cause as Error).message})` : ''}: unavailable`)
  const failures = [pgError('duplicate key value violates unique constraint', '23505'), pgError('relation "op_log" does not exist', '42P01'), pgError('out of memory', '53200'), new TypeError('x is undefined'), 'a string']
  for (const err of failures) t.notOk(isDatabaseUnavailable(err), `${err instanceof Error ? err.message : err}: a failure, not an outage`)
})

t.test('core - every read view answers 503 with Retry-After while PostgreSQL is down, and 200 once it is back', async (t) => {
  await publishEdit(jetstream(await stack.connect()), 'acme', 'outage', edit('still here', 9))
  const tok = await token({ tenant: 'acme' })
  await until('materialized', async () => typeof (await readState(core.url, 'outage', tok)) === 'object')
  const views = ['state', 'state?at=1', 'history', 'blame']
  const get = (view: string) => fetch(`${core.url}/v1/docs/outage/${view}`, { headers: { authorization: `Bearer ${tok}` } })
  const status = async (view: string) => {
    const res = await get(view)
    await res.arrayBuffer()
    return res.status
  }

  const port = stack.pg.port
  await terminate(stack.pg.process, 'SIGINT')
  try {
    // Twice round: the first requests may meet pooled sessions the shutdown ended, the next a refused connect.
    for (const view of [...views, ...views]) {
      const res = await get(view)
      t.same([res.status, res.headers.get('retry-after'), await res.json()], [READ_UNAVAILABLE_STATUS, String(READ_UNAVAILABLE_RETRY_AFTER_S), { error: 'database unavailable; retry' }], `${view} during the outage`)
    }
  } finally {
    stack.pg = await startPostgres({ dir: join(stack.dir, 'pg'), port, fsync: false })
  }
  await until('reads served again', async () => (await status('state')) === 200, 30_000)
  for (const view of views) t.equal(await status(view), 200, `${view} after the outage`)
})
