import t from 'tap'
import { docAllowed } from '../../contracts/mod.ts'

t.test('contracts - doc patterns: exact, "*", prefix, suffix and inner wildcards', async (t) => {
  const cases: [string[], string, boolean][] = [
    [['*'], 'anything/at all', true],
    [['spec'], 'spec', true],
    [['spec'], 'spec2', false],
    [['team-a/*'], 'team-a/plan', true],
    [['team-a/*'], 'team-b/plan', false],
    [['*-draft'], 'q3-draft', true],
    [['*-draft'], 'q3-final', false],
    [['a*b*c'], 'aXbYc', true],
    [['a*b*c'], 'acb', false],
    [['ab*ba'], 'aba', false],
    [['x', 'y/*'], 'y/1', true],
  ]
  for (const [docs, docId, want] of cases) t.equal(docAllowed({ docs }, docId), want, `${docs.join(',')} ~ ${docId}`)
})
