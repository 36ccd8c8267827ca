// The heap growth cap (runtime/heap.ts) in child processes churning garbage over a large live
// set: capped, the heap peaks well below where 4× growth takes it in the same run, and a growth
// factor set on the command line wins over the cap.
import t from 'tap'
import { execFileSync } from 'node:child_process'

const WORKLOAD = `
import { capHeapGrowth } from ${JSON.stringify(new URL('../../runtime/heap.ts', import.meta.url).href)}
if (process.env.CAP === '1') capHeapGrowth()
globalThis.live = Array.from({ length: 1_500_000 }, (_, i) => ({ a: i, b: 'x' + i }))
let churn = []
let peak = 0
for (let round = 0; round < 600; round++) {
  for (let i = 0; i < 20_000; i++) churn.push({ round, i, s: 'y' + i })
  if (churn.length > 200_000) churn = churn.slice(-20_000)
  peak = Math.max(peak, process.memoryUsage().heapTotal)
}
console.log(Math.round(peak / 1048576))
`

/** The child's largest heapTotal in MB. */
function peakHeapMb(cap: boolean, nodeFlags: string[] = []): number {
  const out = execFileSync(process.execPath, [...nodeFlags, '--import', 'tsx', '--input-type=module', '-e', WORKLOAD], { env: { ...process.env, CAP: cap ? '1' : '0' }, encoding: 'utf8' })
  return Number(out.trim())
}

// V8's own factor varies from run to run; 4× (its largest) set on the command line does not.
const FOUR_TIMES = '--heap-growing-percent=300'
const fourTimes = peakHeapMb(false, [FOUR_TIMES])
const capped = peakHeapMb(true)
const commandLine = peakHeapMb(true, [FOUR_TIMES])

t.ok(capped < fourTimes * 0.75, `capped heap peaks at ${capped} MB, under 0.75× the ${fourTimes} MB of 4× growth`)
// Judged against 4× growth, as the cap is: the two stay apart on a loaded box, where the heap peaks vary.
t.ok(commandLine > fourTimes * 0.75, `${FOUR_TIMES} on the command line wins over the cap: ${commandLine} MB, near the ${fourTimes} MB of 4× growth (the cap's ${capped} MB)`)
