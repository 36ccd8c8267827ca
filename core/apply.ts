import * as Y from 'yjs'

/**
 * What an update did to a document:
 * - applied: it changed the document;
 * - pending: Yjs holds it until the clocks it depends on arrive (a sequence gap);
 * - duplicate: everything in it was already applied (a retry).
 */
export type ApplyOutcome = 'applied' | 'pending' | 'duplicate'

/**
 * Applies a Yjs update and says what it did.
 * Throws when Yjs cannot integrate it (a poisoned update); the doc may then be half-modified
 * and must be rebuilt from committed state (batch.ts).
 */
export function applyTracked(doc: Y.Doc, update: Uint8Array): ApplyOutcome {
  const store = doc.store
  const pendingBefore = store.pendingStructs?.update
  const pendingDsBefore = store.pendingDs
  let changed = false
  // What Yjs itself tests before emitting 'update' (new clocks or deletions), without an
  // 'update' listener, which would make it encode every transaction's update.
  const onTransaction = (tr: Y.Transaction) => {
    changed ||= tr.deleteSet.clients.size > 0 || [...tr.afterState].some(([client, clock]) => tr.beforeState.get(client) !== clock)
  }
  doc.on('afterTransaction', onTransaction)
  try {
    Y.applyUpdate(doc, update)
  } finally {
    doc.off('afterTransaction', onTransaction)
  }
  if (changed) return 'applied'
  if (!sameBytes(store.pendingStructs?.update, pendingBefore) || !sameBytes(store.pendingDs, pendingDsBefore)) return 'pending'
  return 'duplicate'
}

function sameBytes(a: Uint8Array | null | undefined, b: Uint8Array | null | undefined): boolean {
  if (!a || !b) return !a === !b
  return a === b || Buffer.compare(a, b) === 0
}
