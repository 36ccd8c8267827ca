import t from 'tap'
import fc from 'fast-check'
import { MAX_EDIT_PARTITIONS, docIdFromKey, docKey, editIngestSubject, editStoredSubject, parseEditSubject } from '../../contracts/mod.ts'

t.test('contracts - docKey is a reversible single subject token for any doc id', async (t) => {
  fc.assert(
    fc.property(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 64 }).filter((s) => !/[\u0000-\u001f\u007f]/.test(s)), (docId) => {
      const key = docKey(docId)
      return /^[A-Za-z0-9_~-]+$/.test(key) && docIdFromKey(key) === docId
    }),
  )
  t.equal(docKey('spec-2024_q3'), 'spec-2024_q3', 'plain ids stay readable')
  t.equal(docKey('a.b c'), 'a~2Eb~20c')
})

t.test('contracts - docIdFromKey rejects tokens docKey cannot produce', async (t) => {
  for (const bad of ['a.b', 'a~2', 'a~zz', 'a*', 'a>', '~61', 'a~FF', '']) t.throws(() => docIdFromKey(bad), bad)
})

t.test('contracts - stored edit subjects parse back; anything else is refused', async (t) => {
  const s = editStoredSubject('acme', 7, 'notes/q3 plan')
  t.same(parseEditSubject(s), { tenant: 'acme', partition: 7, docId: 'notes/q3 plan' })
  t.equal(editIngestSubject('acme', 'x'), 'ten.acme.ed.x')
  for (const bad of ['ten.acme.ed.x', `ten.acme.ed.${MAX_EDIT_PARTITIONS}.x`, 'ten.acme.ed.07.x', 'ten.ACME.ed.1.x', 'foo.acme.ed.1.x', 'ten.acme.ed.1.x.y', 'ten.acme.ed.-1.x']) {
    t.throws(() => parseEditSubject(bad), bad)
  }
  t.throws(() => editIngestSubject('Bad Tenant', 'x'))
})
