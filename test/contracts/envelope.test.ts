import t from 'tap'
import { decodeEdits, decodeEnvelope, decodeFailureReason, editMsgId, encodeEnvelope, parseEventTime } from '../../contracts/mod.ts'
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
    // PostgreSQL holds no NUL in text: the row would fail its partition's every commit.
    [{ ...good, userId: 'mallory\u0000' }, /userId: user id: contains a NUL/],
    [{ ...good, edgeId: 'edge\u0000' }, /edgeId: edge id: contains a NUL/],
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
  // Other control characters pass, as before tokens refused them: a replay stores what it stored then.
  t.equal(decodeEnvelope(pack({ ...good, userId: 'tab\there' })).userId, 'tab\there')
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

t.test('contracts - eventTs is optional: messages from before it still decode, and it round-trips', async (t) => {
  t.notOk('eventTs' in decodeEnvelope(pack(good)), 'an envelope without eventTs decodes')
  const oldBatch = { v: 2, tenant: 'acme', partition: 0, edgeId: 'e', updates: [{ docId: 'd', userId: 'u', update: new Uint8Array([1]), ingestTs: 1_700_000_000_000 }] }
  t.same(decodeEdits(pack(oldBatch)).map((e) => e.eventTs), [undefined], 'a batch without eventTs decodes')
  t.equal(decodeEnvelope(encodeEnvelope({ ...good, eventTs: 1_699_999_000_000 })).eventTs, 1_699_999_000_000)
  const batch = { ...oldBatch, updates: [{ ...oldBatch.updates[0], eventTs: 1_699_999_000_000 }] }
  t.same(decodeEdits(pack(batch)).map((e) => e.eventTs), [1_699_999_000_000], 'a batched update carries it')
  t.throws(() => decodeEnvelope(pack({ ...good, eventTs: 'yesterday' })), 'a bad one is refused')
})

t.test('contracts - X-Event-Time parses ISO 8601 with a zone or ms since epoch, nothing else', async (t) => {
  t.equal(parseEventTime('2024-05-01T09:30:00Z'), Date.UTC(2024, 4, 1, 9, 30))
  t.equal(parseEventTime('2024-05-01T11:30:00.250+02:00'), Date.UTC(2024, 4, 1, 9, 30, 0, 250))
  t.equal(parseEventTime('1714555800000'), 1_714_555_800_000)
  for (const bad of ['2024-05-01T09:30:00', '2024-05-01', 'May 1 2024', '', '0', '1.5e12', '2024-13-01T00:00:00Z']) t.throws(() => parseEventTime(bad), RangeError, JSON.stringify(bad))
})
