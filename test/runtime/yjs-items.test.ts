// misplacedNeighbours (runtime/yjs-items.ts): core refuses an HTTP update before applying it when an
// item's neighbours lie in different lists or a right neighbour is a map entry. It must never refuse
// an update a real Yjs client made.
import t from 'tap'
import * as Y from 'yjs'
import { malformedUpdate, misplacedItem, misplacedNeighbours } from '../../runtime/yjs-items.ts'
import { applyTracked } from '../../core/apply.ts'
import { mapEntryWithRightNeighbour, misplacedEdit } from '../helpers/edits.ts'

const structsOf = (update: Uint8Array) => Y.decodeUpdate(update).structs
const docOf = (...updates: Uint8Array[]) => {
  const doc = new Y.Doc()
  for (const u of updates) Y.applyUpdate(doc, u)
  return doc
}

t.test('yjs items - updates no client makes are refused before applying', async (t) => {
  const { base, misplaced } = misplacedEdit()
  t.match(misplacedNeighbours(docOf(base), structsOf(misplaced)), /item 10:0 names a map entry as its right neighbour/)
  const map = new Y.Doc()
  map.clientID = 21
  map.getMap('m').set('k', 1)
  t.match(misplacedNeighbours(docOf(Y.encodeStateAsUpdate(map)), structsOf(mapEntryWithRightNeighbour(22, { client: 21, clock: 0 }))), /item 22:0 names a map entry as its right neighbour/)
})

t.test('yjs items - a retry resending a nested type the document holds passes', async (t) => {
  // A phone's first POST landed but its 202 was lost; its next one resends everything of its own.
  const server = new Y.Doc()
  const phone = new Y.Doc()
  phone.clientID = 1
  const web = new Y.Doc()
  web.clientID = 2
  const list = new Y.Array<string>()
  phone.getMap('m').set('list', list)
  list.insert(0, ['a1'])
  Y.applyUpdate(server, Y.encodeStateAsUpdate(phone))
  Y.applyUpdate(web, Y.encodeStateAsUpdate(server))
  ;(web.getMap('m').get('list') as Y.Array<string>).insert(1, ['w1'])
  Y.applyUpdate(server, Y.encodeStateAsUpdate(web, Y.encodeStateVector(server)))
  Y.applyUpdate(phone, Y.encodeStateAsUpdate(server, Y.encodeStateVector(phone)))
  list.insert(1, ['a2'])
  // Since the state the phone last had acked: the web client's clocks, none of its own.
  const retry = Y.encodeStateAsUpdate(phone, Y.encodeStateVector(new Map([[2, Y.getState(server.store, 2)]])))
  t.equal(misplacedNeighbours(server, structsOf(retry)), null)
  Y.applyUpdate(server, retry)
  t.same(server.getMap('m').toJSON(), { list: ['a1', 'a2', 'w1'] }, 'it applies as the phone has it')
  t.equal(misplacedItem(server, Y.parseUpdateMeta(retry)), null)
})

t.test('yjs items - no update of random concurrent edits is refused or makes a check throw (text, formats, arrays, maps, nested types, XML; out of order, merged retries)', async (t) => {
  let seed = 7
  const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff
  const pick = <T>(a: T[]) => a[Math.floor(rnd() * a.length)]!
  let checked = 0
  const refused: string[] = []
  for (let round = 0; round < 60; round++) {
    const server = new Y.Doc()
    const clients = Array.from({ length: 3 }, (_, i) => {
      const d = new Y.Doc()
      d.clientID = 10 + i
      return d
    })
    const logs = clients.map(() => [] as Uint8Array[])
    const queue: Uint8Array[] = []
    clients.forEach((d, i) =>
      d.on('update', (u: Uint8Array, origin: unknown) => {
        if (origin === 'sync') return
        logs[i]!.push(u)
        queue.push(u)
      }),
    )
    const edit = (d: Y.Doc) => {
      const r = rnd()
      const text = d.getText('t')
      const arr = d.getArray<unknown>('a')
      const xml = d.getXmlFragment('x')
      if (r < 0.2) text.insert(Math.floor(rnd() * (text.length + 1)), pick(['a', 'bc', 'def']), rnd() < 0.3 ? { bold: true } : undefined)
      else if (r < 0.3 && text.length > 0) {
        const p = Math.floor(rnd() * text.length)
        text.delete(p, Math.min(text.length - p, 1 + Math.floor(rnd() * 3)))
      } else if (r < 0.38 && text.length > 0) {
        const p = Math.floor(rnd() * text.length)
        text.format(p, Math.min(2, text.length - p), { italic: rnd() < 0.5 ? true : null })
      } else if (r < 0.5) arr.insert(Math.floor(rnd() * (arr.length + 1)), [rnd() < 0.4 ? new Y.Array() : rnd() < 0.5 ? new Y.Map() : Math.floor(rnd() * 99)])
      else if (r < 0.58 && arr.length > 0) arr.delete(Math.floor(rnd() * arr.length))
      else if (r < 0.7) {
        const nested = arr.toArray().filter((x): x is Y.Array<unknown> | Y.Map<unknown> => x instanceof Y.Array || x instanceof Y.Map)
        if (nested.length === 0) return
        const n = pick(nested)
        if (n instanceof Y.Array) {
          if (n.length && rnd() < 0.3) n.delete(Math.floor(rnd() * n.length))
          else n.insert(Math.floor(rnd() * (n.length + 1)), [rnd() < 0.2 ? new Y.Text('z') : 'n'])
        } else n.set(pick(['p', 'q']), rnd() < 0.2 ? new Y.Array() : rnd())
      } else if (r < 0.8) {
        const map = d.getMap<unknown>('m')
        if (rnd() < 0.2) map.delete(pick(['k1', 'k2']))
        else map.set(pick(['k1', 'k2', 'k3']), rnd() < 0.3 ? new Y.Text('hi') : rnd())
      } else {
        const el = new Y.XmlElement('p')
        if (rnd() < 0.5) el.setAttribute('c', 'v')
        el.insert(0, [new Y.XmlText('x')])
        xml.insert(Math.floor(rnd() * (xml.length + 1)), [el])
      }
    }
    // As core judges an HTTP update (core/batch.ts): before applying, and all the document took (pending structs it released too).
    const deliver = (u: Uint8Array) => {
      checked++
      const why = malformedUpdate(u, server)
      if (why) refused.push(why)
      const { integrated } = applyTracked(server, u)
      const misplaced = integrated && misplacedItem(server, integrated)
      if (misplaced) refused.push(misplaced)
    }
    for (let step = 0; step < 60; step++) {
      const r = rnd()
      if (r < 0.6) edit(pick(clients))
      else if (r < 0.8 && queue.length) deliver(queue.splice(Math.floor(rnd() * Math.min(queue.length, 3)), 1)[0]!)
      else if (r < 0.9) {
        const c = pick(clients)
        Y.applyUpdate(c, Y.encodeStateAsUpdate(server, Y.encodeStateVector(c)), 'sync')
      } else {
        const l = pick(logs)
        if (l.length > 1) queue.push(Y.mergeUpdates(l.slice(-1 - Math.floor(rnd() * 4))))
      }
    }
    while (queue.length) deliver(queue.shift()!)
  }
  t.ok(checked > 1_000, `${checked} updates checked`)
  t.same(refused, [], 'none refused')
})

t.test('yjs items - a paste of tens of thousands of formatted runs is judged in time linear in it, and a long chain of neighbours does not exhaust the stack', async (t) => {
  const room = new Y.Doc()
  const writer = new Y.Doc()
  writer.clientID = 2
  let update: Uint8Array | null = null
  writer.on('update', (u: Uint8Array) => (update = u))
  // One transaction: 40,000 runs (one item each, alternating formats), then a character between
  // the last two, whose neighbours lead back through every run before any of them is placed.
  writer.transact(() => {
    const text = writer.getText('t')
    text.applyDelta(Array.from({ length: 40_000 }, (_, i) => (i % 2 ? { insert: `w${i} `, attributes: { bold: true } } : { insert: `p${i} ` })))
    text.insert(text.length - 4, 'Z')
  })
  const { structs } = Y.decodeUpdate(update!)
  t.ok(structs.length > 40_000, `${structs.length} structs`)
  const best = (run: () => void) => Math.min(...[0, 1, 2].map(() => ((s) => (run(), performance.now() - s))(performance.now())))
  let verdict: string | null | undefined
  const judged = best(() => (verdict = misplacedNeighbours(room, structs)))
  t.equal(verdict, null, 'nothing misplaced')
  const applied = best(() => Y.applyUpdate(new Y.Doc(), update!))
  // Quadratic before (an array copied per struct, a linear search per neighbour): 24 s against 45 ms.
  t.ok(judged < 10 * applied + 50, `judged in ${judged.toFixed(0)} ms; applying it takes ${applied.toFixed(0)} ms`)
})
