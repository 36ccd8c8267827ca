import type pg from 'pg'

/**
 * Runs `work` in a transaction on `c`: COMMIT when it resolves, ROLLBACK when it (or BEGIN)
 * throws, rethrowing its error; a rollback that fails too joins it in an AggregateError naming
 * `what` failed.
 */
export async function inTransaction<T>(c: pg.ClientBase, what: string, work: () => Promise<T>): Promise<T> {
  try {
    await c.query('BEGIN')
    const out = await work()
    await c.query('COMMIT')
    return out
  } catch (err) {
    await c.query('ROLLBACK').catch((rollbackErr: unknown) => {
      throw new AggregateError([err, rollbackErr], `rollback failed after a failed ${what}`)
    })
    throw err
  }
}
