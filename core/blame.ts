import type pg from 'pg'
import * as Y from 'yjs'
import type { BlameAnswer, BlameSpan } from '../contracts/mod.ts'
import type { BlobStore } from '../runtime/blobs/blob-store.ts'
import { docRows } from './op-log-rows.ts'
import { forEachSliced, readDocAt, type PointInTime } from './point-in-time.ts'

/**
 * Blame in Yjs terms: every character of a Y.Text is an item with an id (clientID, clock), and
 * every op-log row's update carries some (clientID, clock) ranges. A character was written by the
 * user of the FIRST row (in stream order) whose update carried its id — Yjs keeps the first content
 * of an id, so a later row carrying the same range (a retry, a resync) changed nothing.
 *
 * What it covers: one root Y.Text, by name (`?type=`, default DEFAULT_TEXT_TYPE, the text the
 * stock clients type into), as it is now or at `?at=`. Embeds and nested types count as one
 * U+FFFC character (as Y.Text counts them); formatting marks carry no text and are skipped.
 * Y.Map, Y.Array and Y.Xml* roots are not blamed.
 *
 * Cost, and what bounds it: the text comes from readDocAt (newest snapshot + op-log tail); the
 * attribution reads every op-log row of the document up to that point and decodes each update's
 * structs without integrating them (Y.decodeUpdate: parseUpdateMeta would be ~2x cheaper on
 * one-character updates, but it gives one [from, to) per client and so would credit the gaps of
 * a merged update — its Skips — to the wrong writer). Time is linear in the document's op-log
 * bytes, memory in its number of (client, range) runs and spans — not in its bytes. Both passes
 * let the event loop run every few ms (forEachSliced), and the read API streams
 * the spans, so a long log makes blame slow, never core's commits (~1.2 s of decoding per 100K
 * one-character updates on the 2-core dev box). A per-snapshot attribution sidecar (or a cache
 * of it per document) would bound it by the tail; not built yet.
 */

/** Who wrote a run of clocks, and when. */
interface Writer {
  user: string
  ts: string
}

/** Per Yjs client, disjoint clock ranges sorted by start, each with the row that first carried it. */
class Attribution {
  private readonly clients = new Map<number, { start: number[]; end: number[]; writer: Writer[] }>()

  /** Claims [start, end) of `client` for `writer`, except what earlier rows claimed already. */
  claim(client: number, start: number, end: number, writer: Writer): void {
    let runs = this.clients.get(client)
    if (!runs) this.clients.set(client, (runs = { start: [], end: [], writer: [] }))
    const last = runs.end.length - 1
    if (last < 0 || start >= runs.end[last]!) {
      // The common case: a client's clocks arrive in order.
      if (last >= 0 && start === runs.end[last] && runs.writer[last] === writer) runs.end[last] = end
      else runs.start.push(start), runs.end.push(end), runs.writer.push(writer)
      return
    }
    // A range overlapping earlier claims: only its gaps are new.
    const pieces: [number, number][] = []
    let from = start
    for (let i = 0; i < runs.start.length && from < end; i++) {
      if (runs.end[i]! <= from) continue
      if (runs.start[i]! > from) pieces.push([from, Math.min(end, runs.start[i]!)])
      from = Math.max(from, runs.end[i]!)
    }
    if (from < end) pieces.push([from, end])
    for (const [s, e] of pieces) {
      const at = runs.start.findIndex((x) => x > s)
      const i = at < 0 ? runs.start.length : at
      runs.start.splice(i, 0, s)
      runs.end.splice(i, 0, e)
      runs.writer.splice(i, 0, writer)
    }
  }

  /** The writer of `clock` and the end of its run, or null (and the next claimed clock) when none claimed it. */
  find(client: number, clock: number): { writer: Writer | null; end: number } {
    const runs = this.clients.get(client)
    if (!runs) return { writer: null, end: Infinity }
    let lo = 0
    let hi = runs.start.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (runs.end[mid]! <= clock) lo = mid + 1
      else hi = mid
    }
    if (lo < runs.start.length && runs.start[lo]! <= clock) return { writer: runs.writer[lo]!, end: runs.end[lo]! }
    return { writer: null, end: lo < runs.start.length ? runs.start[lo]! : Infinity }
  }
}

/** The spans of root Y.Text `type` as it was at `at`, or null when the document had no update by then. */
export async function readBlame(pool: pg.Pool, blobs: BlobStore, tenant: string, docId: string, at: PointInTime, type: string): Promise<BlameAnswer | null> {
  const built = await readDocAt(pool, blobs, tenant, docId, at)
  if (!built) return null
  try {
    const attribution = new Attribution()
    await forEachSliced(docRows(pool, tenant, docId, { afterSeq: 0, uptoSeq: built.seq, uptoTime: built.time }), (row) => {
      const writer = { user: row.user, ts: row.eventTs.toISOString() }
      // Skips are the gaps of a merged update: clocks it does not carry.
      for (const s of Y.decodeUpdate(row.update).structs) if (!(s instanceof Y.Skip)) attribution.claim(s.id.client, s.id.clock, s.id.clock + s.length, writer)
    })
    const spans: BlameSpan[] = []
    let index = 0
    // Neighbouring pieces with the same user and ts are one span.
    await forEachSliced(textPieces(built.doc.getText(type), attribution), ({ chars, writer }) => {
      const last = spans.at(-1)
      if (last && last.user === (writer?.user ?? null) && last.ts === (writer?.ts ?? null)) last.text += chars
      else spans.push({ text: chars, index, user: writer?.user ?? null, ts: writer?.ts ?? null })
      index += chars.length
    })
    return { type, seq: built.seq, spans }
  } finally {
    built.doc.destroy()
  }
}

/** The text's live items in order, each split by its writers. */
function* textPieces(text: Y.Text, attribution: Attribution): Generator<{ chars: string; writer: Writer | null }> {
  for (let item = text._start; item !== null; item = item.right) {
    if (item.deleted || !item.countable) continue
    const chars = item.content instanceof Y.ContentString ? item.content.str : '\ufffc'.repeat(item.length)
    let offset = 0
    while (offset < item.length) {
      const { writer, end } = attribution.find(item.id.client, item.id.clock + offset)
      const upto = Math.min(item.length, end - item.id.clock)
      yield { chars: chars.slice(offset, upto), writer }
      offset = upto
    }
  }
}
