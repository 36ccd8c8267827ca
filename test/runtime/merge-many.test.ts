import t from 'tap'
import * as Y from 'yjs'
import { mergeMany } from '../../runtime/yjs-items.ts'
import { typedUpdates } from '../../loadtest/scenarios/core-doc.ts'

const textOf = (update: Uint8Array): string => {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, update)
  return doc.getText('t').toString()
}

// Typed by several sessions (clients) with clicks elsewhere and backspaces, one update per edit.
const { updates, text } = typedUpdates(30_000)

t.test('runtime - mergeMany gives the bytes Y.mergeUpdates gives, at every count around its rounds', async (t) => {
  for (const n of [1, 2, 31, 32, 33, 1_025, 1_500]) {
    const some = updates.slice(0, n)
    t.same(mergeMany(some), n === 1 ? some[0] : Y.mergeUpdates(some), `${n} updates`)
  }
  t.throws(() => mergeMany([]), /no update/)
})

t.test('runtime - mergeMany of a 30,000-update op-log tail is not quadratic', async (t) => {
  // One Y.mergeUpdates of these takes ~25 s here (it re-sorts its inputs per struct written);
  // rounds of 32 take well under one. The bound only tells the two apart.
  const t0 = performance.now()
  const merged = mergeMany(updates)
  const ms = performance.now() - t0
  t.ok(ms < 5_000, `merged in ${Math.round(ms)} ms`)
  t.equal(textOf(merged), text, 'the typed text')
})
