import * as Y from 'yjs'
import { COMMENTS_ROOT, OpKind } from '../contracts/mod.ts'
import { VersionRegressionError } from './errors.ts'
import type { UpdateMeta } from '../runtime/yjs-items.ts'

/**
 * What an update did to a document:
 * - applied: it changed the document;
 * - pending: Yjs holds it until the clocks it depends on arrive (a sequence gap);
 * - duplicate: everything in it was already applied (a retry).
 */
export type ApplyOutcome = 'applied' | 'pending' | 'duplicate'

/**
 * What an applied update changed, read off its transaction (no second decode of the update):
 * the structs Yjs integrated (the update's, plus pending ones it released) and its delete set.
 */
export interface ApplySummary {
  /** Yjs client ids whose clocks moved. */
  clients: number[]
  opKinds: OpKind[]
  /** UTF-16 units of ContentString inserted. */
  insertedChars: number
  /** Items deleted (the delete set's total length). */
  deleted: number
}

export interface ApplyResult {
  outcome: ApplyOutcome
  /** Set when the outcome is 'applied'. */
  summary?: ApplySummary
  /**
   * Set when the outcome is 'applied': per client, the clocks the document took (from its state
   * before, to after) — the update's and the pending structs it released, in Y.parseUpdateMeta's shape.
   */
  integrated?: UpdateMeta
  /** True when the apply also took pending structs of earlier updates (they waited for clocks this one brought). */
  released?: boolean
}

/**
 * The document version is its state vector plus its delete set. An update moves it forward when
 * no client's clock goes down and some clock goes up or something is deleted; 'unchanged' is a
 * duplicate; 'regressed' (a clock went down) never happens in a Yjs that works, and an update that
 * shows it is a violation (version-regression): its doc is rebuilt without it.
 */
export function versionTransition(before: Map<number, number>, after: Map<number, number>, deletes: boolean): 'forward' | 'unchanged' | 'regressed' {
  let moved = deletes
  for (const [client, clock] of before) if ((after.get(client) ?? 0) < clock) return 'regressed'
  for (const [client, clock] of after) if (clock > (before.get(client) ?? 0)) moved = true
  return moved ? 'forward' : 'unchanged'
}

/**
 * Applies a Yjs update and says what it did.
 * Throws when Yjs cannot integrate it (a poisoned update) or the document version would go
 * backwards (VersionRegressionError); the doc may then be half-modified and must be rebuilt from
 * committed state (batch.ts).
 */
export function applyTracked(doc: Y.Doc, update: Uint8Array): ApplyResult {
  const store = doc.store
  const pendingBefore = store.pendingStructs?.update
  const pendingDsBefore = store.pendingDs
  let summary: ApplySummary | undefined
  const integrated: UpdateMeta = { from: new Map(), to: new Map() }
  let regressed = false
  // What Yjs itself tests before emitting 'update' (new clocks or deletions), without an
  // 'update' listener, which would make it encode every transaction's update. Runs before Yjs
  // merges the new structs into older ones, so the structs from beforeState on are the new ones.
  const onTransaction = (tr: Y.Transaction) => {
    const transition = versionTransition(tr.beforeState, tr.afterState, tr.deleteSet.clients.size > 0)
    if (transition === 'regressed') regressed = true
    if (transition === 'forward') summary = summarize(doc, tr, summary, integrated)
  }
  doc.on('afterTransaction', onTransaction)
  try {
    Y.applyUpdate(doc, update)
  } finally {
    doc.off('afterTransaction', onTransaction)
  }
  if (regressed) throw new VersionRegressionError('the document version would go backwards (a client clock went down)')
  if (summary) return { outcome: 'applied', summary, integrated, ...(pendingBefore && store.pendingStructs?.update !== pendingBefore && { released: true }) }
  if (!sameBytes(store.pendingStructs?.update, pendingBefore) || !sameBytes(store.pendingDs, pendingDsBefore)) return { outcome: 'pending' }
  return { outcome: 'duplicate' }
}

const KIND_ORDER = [OpKind.Insert, OpKind.Delete, OpKind.Format, OpKind.Comment] as const

/** Adds one transaction's changes to `into`, and the clocks it took to `integrated` (an update applies in one transaction; kept general). */
function summarize(doc: Y.Doc, tr: Y.Transaction, into: ApplySummary | undefined, integrated: UpdateMeta): ApplySummary {
  const kinds = new Set<OpKind>(into?.opKinds)
  const clients = into?.clients ?? []
  let insertedChars = into?.insertedChars ?? 0
  let deleted = into?.deleted ?? 0
  // Only a document with a comments root can have comments: no walk up the types otherwise.
  const commentsRoot = doc.share.get(COMMENTS_ROOT)
  for (const [client, clock] of tr.afterState) {
    const from = tr.beforeState.get(client) ?? 0
    if (clock <= from) continue
    integrated.from.set(client, Math.min(from, integrated.from.get(client) ?? from))
    integrated.to.set(client, Math.max(clock, integrated.to.get(client) ?? clock))
    if (!clients.includes(client)) clients.push(client)
    const structs = doc.store.clients.get(client) ?? []
    for (let i = structs.length - 1; i >= 0 && structs[i]!.id.clock >= from; i--) {
      const struct = structs[i]!
      if (!(struct instanceof Y.Item)) continue // GC'd content arrives as GC structs: nothing to classify
      const content = struct.content
      if (content instanceof Y.ContentFormat) kinds.add(OpKind.Format)
      else if (!(content instanceof Y.ContentDeleted)) kinds.add(OpKind.Insert)
      if (content instanceof Y.ContentString) insertedChars += content.str.length
      if (commentsRoot && rootOf(struct) === commentsRoot) kinds.add(OpKind.Comment)
    }
  }
  for (const ranges of tr.deleteSet.clients.values()) for (const r of ranges) deleted += r.len
  if (deleted > 0) kinds.add(OpKind.Delete)
  return { clients, opKinds: KIND_ORDER.filter((k) => kinds.has(k)), insertedChars, deleted }
}

function rootOf(item: Y.Item): Y.AbstractType<unknown> | null {
  let type = item.parent as Y.AbstractType<unknown> | null
  while (type?._item) type = type._item.parent as Y.AbstractType<unknown> | null
  return type
}

function sameBytes(a: Uint8Array | null | undefined, b: Uint8Array | null | undefined): boolean {
  if (!a || !b) return !a === !b
  return a === b || Buffer.compare(a, b) === 0
}
