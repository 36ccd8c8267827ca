import t from 'tap'
import { ratioLine } from '../../loadtest/typing-report.ts'
import type { TypingStormResult } from '../../loadtest/typing-storm.ts'

/** A typing result with only what the ratio line reads filled in. */
function run(system: string, opsPerServerCore: number, broken: { converged?: boolean; missing?: number } = {}): TypingStormResult {
  return { system, label: system, rate: 2_000, opsPerServerCore, converged: broken.converged ?? true, persisted: { n: 100, missing: broken.missing ?? 0, p50Ms: 1, maxMs: 2 } } as TypingStormResult
}

t.test('loadtest - the ratio line compares DocFlow with each peer, and says n/a with the reason when either run failed', async (t) => {
  t.equal(ratioLine([run('DocFlow', 3_000), run('y-websocket reference', 2_000), run('Hocuspocus', 6_000)], 2_000), 'ops/s per server core: DocFlow 3,000 = 1.50× y-websocket reference, 0.50× Hocuspocus')
  t.equal(
    ratioLine([run('DocFlow', 3_000, { missing: 7 }), run('y-websocket reference', 2_000), run('Hocuspocus', 6_000)], 2_000),
    'ops/s per server core: DocFlow 3,000 = n/a× y-websocket reference (FAILED: DocFlow 7 sampled edits not persisted), n/a× Hocuspocus (FAILED: DocFlow 7 sampled edits not persisted)',
  )
  t.equal(
    ratioLine([run('DocFlow', 3_000), run('y-websocket reference', 9_000, { converged: false }), run('Hocuspocus', 6_000)], 2_000),
    'ops/s per server core: DocFlow 3,000 = n/a× y-websocket reference (FAILED: y-websocket reference docs diverged), 0.50× Hocuspocus',
  )
})
