import * as Y from 'yjs'

/** A seeded generator, so a test finds the same mutants on every run. */
export function seeded(seed: number): () => number {
  return () => ((seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff) / 0x7fffffff)
}

/** A copy of `update` with one to three bytes set to random values. */
export function mutate(update: Uint8Array, rand: () => number): Uint8Array {
  const mutant = update.slice()
  for (let k = 1 + Math.floor(rand() * 3); k > 0; k--) mutant[Math.floor(rand() * mutant.length)] = Math.floor(rand() * 256)
  return mutant
}

/** Mutates `update` until `accept` says the mutant is the kind wanted. */
export function mutateUntil(update: Uint8Array, accept: (mutant: Uint8Array) => boolean, rand = seeded(7)): Uint8Array {
  for (let tries = 0; tries < 100_000; tries++) {
    const mutant = mutate(update, rand)
    if (accept(mutant)) return mutant
  }
  throw new Error('no mutant of the wanted kind found')
}

/** True when Y.decodeUpdate accepts the bytes. */
export function decodes(update: Uint8Array): boolean {
  try {
    Y.decodeUpdate(update)
    return true
  } catch {
    return false
  }
}

/** Applies `update` to a doc holding `state`: 'ok', 'pending' (structs wait for a gap) or 'throws'. */
export function trial(state: Uint8Array[], update: Uint8Array): 'ok' | 'pending' | 'throws' {
  const doc = new Y.Doc()
  for (const s of state) Y.applyUpdate(doc, s)
  try {
    Y.applyUpdate(doc, update)
  } catch {
    return 'throws'
  }
  return doc.store.pendingStructs || doc.store.pendingDs ? 'pending' : 'ok'
}

/**
 * An edit with nested types and formatting: its mutants often decode but do not apply. Which
 * mutants a seeded search finds depends on every byte, so each test keeps the map key it was
 * tuned with.
 */
export function richEdit(doc: Y.Doc, mapKey = 'r'): void {
  doc.getMap('m').set(mapKey, new Y.Map())
  doc.getArray('a').insert(0, [1, 'x', new Y.Text('q')])
  doc.getText('t').insert(0, 'ZZ', { bold: true })
}
