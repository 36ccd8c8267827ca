import { setFlagsFromString } from 'node:v8'

/**
 * After each full collection V8 lets the old generation grow by a factor it picks from its GC
 * speed, up to 4×. The edge and core promote short-lived garbage (frames, batches in flight) in
 * bursts, so under load their heaps sat at 2–4× their live bytes. Interleaved runs at 1,000
 * typing clients (5,000 ops/s, the box saturated), server PSS at the window's end and server CPU:
 * - V8's own factor (5 runs): 555–620 MB, 1.11–1.13 cores, persisted p50 37–59 ms;
 * - 2× (2 runs): 492–498 MB, 1.10–1.16 cores, persisted p50 35–61 ms;
 * - 1.5× (3 runs): 459–470 MB, but 1.17–1.18 cores and persisted p50 101–182 ms: major
 *   collections often enough to cost CPU and latency at saturation.
 * At 400 clients, where heaps stay small, nothing moved.
 */
const HEAP_GROWING_PERCENT = 100

/**
 * Caps the heap's growth factor for this process (V8 reads the flag at each collection), unless
 * the command line set it (DOCFLOW_NODE_ARGS, a container's command).
 */
export function capHeapGrowth(): void {
  if (process.execArgv.some((a) => /^--heap[-_]growing[-_]percent\b/.test(a))) return
  setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`)
}
