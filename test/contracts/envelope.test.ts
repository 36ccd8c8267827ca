import t from 'tap'
import { decodeEnvelope, decodeFailureReason, editMsgId, encodeEnvelope } from '../../contracts/mod.ts'
import { pack } from '../../contracts/codec.ts'

const good = { v: 1 as const, tenant: 'acme', docId: 'd', userId: 'u', update: new Uint8Array([1, 2]), ingestTs: 1_700_000_000_000, edgeId: 'e' }

t.test('contracts - an envelope round-trips through msgpack', async (t) => {
  const back = decodeEnvelope(encodeEnvelope(good))
  t.same({ ...back, update: [...back.update] }, { ...good, update: [1, 2] })
})

t.test('contracts - bad envelopes fail with a reason naming the field', async (t) => {
  const cases: [unknown, RegExp][] = [
    [{ ...good, v: 2 }, /v:/],
    [{ ...good, tenant: 'No' }, /tenant/],
    [{ ...good, update: new Uint8Array() }, /update: empty update/],
    [{ ...good, update: 'text' }, /update: expected bytes/],
    [{ ...good, ingestTs: -1 }, /ingestTs/],
  ]
  for (const [value, reason] of cases) {
    try {
      decodeEnvelope(pack(value))
      t.fail('accepted a bad envelope')
    } catch (err) {
      t.match(decodeFailureReason(err), reason)
    }
  }
  t.throws(() => decodeEnvelope(new Uint8Array([0xc1])))
})

t.test('contracts - msg ids are tenant-prefixed and content-derived', async (t) => {
  const a = editMsgId('acme', 'd', new Uint8Array([1]))
  t.match(a, /^acme:/)
  t.equal(a, editMsgId('acme', 'd', new Uint8Array([1])))
  t.not(a, editMsgId('acme', 'd2', new Uint8Array([1])), 'same bytes in another doc differ')
  const g = editMsgId('globex', 'd', new Uint8Array([1]))
  t.match(g, /^globex:/)
  t.not(g, a, 'one update in two tenants never shares an id (pitfall: it would stall the aggregate source)')
})
