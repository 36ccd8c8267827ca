import * as Y from 'yjs'
import type pg from 'pg'

/**
 * Checks that what clients typed is exactly what the system kept, so a crash test can fail:
 * the materialized text and the op log's replay must equal the typed text character by
 * character, and the op log must insert exactly as many characters as were typed — one
 * character logged twice (the same content under two message ids, or under two clocks) or
 * one missing is a difference, even where Yjs's idempotent replay would hide it.
 */

/** Where `actual` first differs from `expected`, or null when they are equal. */
export function textDifference(actual: string | null, expected: string): string | null {
  if (actual === expected) return null
  if (actual === null) return 'no text at all'
  let i = 0
  while (i < actual.length && i < expected.length && actual[i] === expected[i]) i++
  const around = (s: string) => JSON.stringify(s.slice(Math.max(0, i - 10), i + 10))
  return `first difference at character ${i} of ${expected.length} (got ${actual.length}): expected …${around(expected)}…, got …${around(actual)}…`
}

/** Characters inserted by one Yjs update (the string content of its items). */
export function insertedChars(update: Uint8Array): number {
  let n = 0
  for (const struct of Y.decodeUpdate(update).structs) {
    if (struct instanceof Y.Item && struct.content instanceof Y.ContentString) n += struct.content.str.length
  }
  return n
}

/** What the op log says a document holds: every logged update replayed in stream order. */
export async function opLogReplay(db: pg.Pool, tenant: string, docId: string): Promise<{ text: string; insertedChars: number; rows: number }> {
  const r = await db.query<{ update: Buffer }>('SELECT update FROM op_log WHERE tenant = $1 AND doc_id = $2 ORDER BY stream_seq', [tenant, docId])
  const doc = new Y.Doc()
  let chars = 0
  for (const { update } of r.rows) {
    Y.applyUpdate(doc, update)
    chars += insertedChars(update)
  }
  const text = doc.getText('t').toString()
  doc.destroy()
  return { text, insertedChars: chars, rows: r.rowCount ?? 0 }
}

/** Every way the op log of `docId` differs from `typed` (empty when it holds each typed character once). */
export async function opLogProblems(db: pg.Pool, tenant: string, docId: string, typed: string): Promise<string[]> {
  const replay = await opLogReplay(db, tenant, docId)
  const problems: string[] = []
  const diff = textDifference(replay.text, typed)
  if (diff) problems.push(`op-log replay: ${diff}`)
  if (replay.insertedChars !== typed.length) problems.push(`op log inserts ${replay.insertedChars} characters over ${replay.rows} updates; ${typed.length} were typed`)
  return problems
}
