import { readFile, readdir } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import type pg from 'pg'
import { DeploymentMismatchError } from './errors.ts'

const DIR = fileURLToPath(new URL('./migrations/', import.meta.url))
// Serializes concurrent migrators (several cores starting at once).
const LOCK_KEY = 0x64660001

/** Applies every migrations/*.sql not yet recorded, each in its own transaction, in name order. */
export async function migrate(client: pg.ClientBase): Promise<string[]> {
  const applied: string[] = []
  await client.query('SELECT pg_advisory_lock($1)', [LOCK_KEY])
  try {
    await client.query('CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())')
    const done = new Set((await client.query<{ version: string }>('SELECT version FROM schema_migrations')).rows.map((r) => r.version))
    for (const file of (await readdir(DIR)).filter((f) => f.endsWith('.sql')).sort()) {
      if (done.has(file)) continue
      const sql = await readFile(DIR + file, 'utf8')
      await client.query('BEGIN')
      try {
        await client.query(sql)
        await client.query('INSERT INTO schema_migrations (version) VALUES ($1)', [file])
        await client.query('COMMIT')
      } catch (err) {
        await client.query('ROLLBACK')
        throw new Error(`migration ${file} failed: ${(err as Error).message}`, { cause: err })
      }
      applied.push(file)
    }
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [LOCK_KEY])
  }
  return applied
}

/**
 * Records the partition count on first use and refuses another one later: with a different
 * count documents would hash to other partitions, whose consumers resume from other checkpoints
 * and filter on other subjects, so uncommitted edits could be skipped.
 */
export async function fixEditPartitions(client: pg.ClientBase, partitions: number): Promise<void> {
  await client.query("INSERT INTO deployment_settings (name, value) VALUES ('edit_partitions', $1) ON CONFLICT (name) DO NOTHING", [String(partitions)])
  const { rows } = await client.query<{ value: string; set_at: Date }>("SELECT value, set_at FROM deployment_settings WHERE name = 'edit_partitions'")
  const fixed = Number(rows[0]!.value)
  if (fixed !== partitions) {
    throw new DeploymentMismatchError(
      `this database's edits are split into ${fixed} partitions (fixed ${rows[0]!.set_at.toISOString()}); DOCFLOW_EDIT_PARTITIONS=${partitions} would move documents to other partitions and could skip uncommitted edits. Set DOCFLOW_EDIT_PARTITIONS=${fixed}.`,
    )
  }
}
