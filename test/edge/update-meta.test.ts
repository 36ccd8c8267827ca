import t from 'tap'
import * as Y from 'yjs'
import { decodeClientUpdate } from '../../edge/protocol.ts'
import { decodes, mutate, richEdit, seeded } from '../helpers/mutants.ts'

// The edge decodes a client's update once and reads its clock ranges from the decoded structs;
// the probe's fast path, the client-id owners and the misplaced-item check rely on them being
// exactly what Y.parseUpdateMeta reads (which would decode the update again).
t.test('edge - the clock ranges of a decoded update are what Y.parseUpdateMeta reads, for merged and mutated updates too', async (t) => {
  const rand = seeded(5)
  const docs = [1, 2, 3].map((id) => {
    const doc = new Y.Doc()
    doc.clientID = id
    return doc
  })
  const updates: Uint8Array[] = []
  for (let round = 0; round < 40; round++) {
    const doc = docs[round % docs.length]!
    const take = (u: Uint8Array) => updates.push(u)
    doc.on('update', take)
    richEdit(doc, `k${round % 4}`)
    doc.getText('t').delete(0, Math.min(2, doc.getText('t').length))
    doc.off('update', take)
    Y.applyUpdate(docs[(round + 1) % docs.length]!, Y.encodeStateAsUpdate(doc))
  }
  // Several clients in one update (a sync step 2), mutants, and one client in two blocks: an
  // update of clients 2 (from clock 3) and 1 (from 0), its first block's client id set to 1.
  const [one, two] = [1, 2].map((id) => Object.assign(new Y.Doc(), { clientID: id }))
  two!.getText('t').insert(0, 'abcdef')
  Y.applyUpdate(one!, Y.encodeStateAsUpdate(two!))
  one!.getText('t').insert(0, 'xyz')
  const twice = Y.encodeStateAsUpdate(one!, Y.encodeStateVector(new Map([[2, 3]])))
  t.equal(twice[2], 2, 'the first block is client 2')
  twice[2] = 1
  const samples = [...updates, Y.mergeUpdates(updates), ...docs.map((d) => Y.encodeStateAsUpdate(d)), twice, ...updates.flatMap((u) => [1, 2, 3, 4].map(() => mutate(u, rand)))]
  let compared = 0
  const differ: string[] = []
  for (const update of samples) {
    let expected: ReturnType<typeof Y.parseUpdateMeta>
    let meta
    try {
      expected = Y.parseUpdateMeta(update)
      meta = decodeClientUpdate(update).meta
    } catch {
      continue // not an update, or a malformed one: refused before its clocks matter
    }
    const show = (m: typeof meta) => JSON.stringify([[...m.from], [...m.to]])
    if (show(meta) !== show(expected)) differ.push(`${show(meta)} instead of ${show(expected)}`)
    compared++
  }
  t.same(differ.slice(0, 3), [], `${differ.length} of ${compared} updates differ`)
  t.ok(compared > updates.length + 4, `${compared} updates compared, mutants among them`)
  t.ok(samples.some((u) => decodes(u) && Y.parseUpdateMeta(u).from.size > 1), 'some span several clients')
})
