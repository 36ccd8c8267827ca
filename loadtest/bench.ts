// `npm run bench`: the typing storm on DocFlow, the y-websocket reference server and Hocuspocus,
// one after another at each offered rate, same driver, same machine; prints one table, the
// per-process CPU breakdown and the ops/s-per-server-core ratios, and appends the run to
// loadtest/RESULTS.md.
//   npm run bench -- [--systems docflow,ywebsocket,hocuspocus] [--rates 2000,5000] [--duration-s 30]
//                    [--warmup-s 5] [--scenarios typing,observers,join,idle] [--observers 1500]
//                    [--joiners 150] [--join-doc-mb 20] [--idle-sockets 10000] [--edges 1] [--no-record]
//                    [--core-doc-updates 100000] [--core-loads 50] [--max-rate 5000]
// --edges n: DocFlow's typing storm runs n edge processes, a document's two clients on two of them.
// The observers and join scenarios (loadtest/scenarios/) run on DocFlow and Hocuspocus only;
// idle sockets (memory per socket and connect rate of one edge process) on DocFlow only.
// The core scenarios (loadtest/scenarios/core-*.ts, issue 10's benchmarks) run on DocFlow only:
// cold-load (a document of --core-doc-updates updates loaded --core-loads times by each path, P95
// target < 100 ms), state-at (state?at= early and late in its life, early P95 target < 500 ms) and
// materialize (ingest → materialized P95 < 50 ms in a typing storm at 50% of the highest rate
// DocFlow sustained: this run's typing storms, else a probe storm at --max-rate offered).
import { execFileSync } from 'node:child_process'
import { appendFileSync, existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, totalmem } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { formatEdges } from './edge-stats.ts'
import { formatBreakdown } from './proc-stats.ts'
import { SYSTEM_KINDS, startSystem, stopAllSystems, type RunningSystem, type SystemKind } from './systems.ts'
import { typingStorm, type TypingStormResult } from './typing-storm.ts'
import { TABLE_HEADER, int, invalid, ms, ratioLine, resultAt, row } from './typing-report.ts'
import { joinScenario, type JoinScenarioResult } from './scenarios/join.ts'
import { observersScenario, type ObserversResult } from './scenarios/observers.ts'
import { idleLines, joinLines, observersLines, scenarioFailed, type Outcome } from './scenarios/report.ts'
import { idleScenario, type IdleResult } from './scenarios/idle.ts'
import { coreLoads, type ColdLoadResult, type StateAtResult } from './scenarios/core-loads.ts'
import { materializeAtHalf, sustainedMax, type MaterializeResult } from './scenarios/core-materialize.ts'
import { coldLoadLines, materializeLines, stateAtLines } from './scenarios/core-report.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const RESULTS = join(ROOT, 'loadtest', 'RESULTS.md')
const USAGE = 'usage: npm run bench -- [--systems docflow,ywebsocket,hocuspocus] [--rates 2000,5000] [--duration-s 30] [--warmup-s 5] [--scenarios typing,observers,join,idle] [--observers 1500] [--joiners 150] [--join-doc-mb 20] [--idle-sockets 10000] [--edges 1] [--core-doc-updates 100000] [--core-loads 50] [--max-rate 5000] [--no-record]'
export const SCENARIOS = ['typing', 'observers', 'join', 'idle', 'cold-load', 'state-at', 'materialize'] as const
/** Most DocFlow edges --edges takes (scripts/start.ts caps EDGE_PROCESSES at 16; this box has 2 cores). */
const MAX_EDGES = 8
/** Systems the observers and join scenarios run on. */
const CROWD_SYSTEMS: readonly SystemKind[] = ['docflow', 'hocuspocus']

function fail(message: string): never {
  console.error(`bench: ${message}\n${USAGE}`)
  process.exit(2)
}

function parseOptions() {
  let values
  try {
    values = parseArgs({
      options: {
        systems: { type: 'string', default: SYSTEM_KINDS.join(',') },
        rates: { type: 'string', default: '2000,5000' },
        'duration-s': { type: 'string', default: '30' },
        'warmup-s': { type: 'string', default: '5' },
        scenarios: { type: 'string', default: SCENARIOS.join(',') },
        observers: { type: 'string', default: '1500' },
        joiners: { type: 'string', default: '150' },
        'join-doc-mb': { type: 'string', default: '20' },
        'idle-sockets': { type: 'string', default: '10000' },
        edges: { type: 'string', default: '1' },
        'core-doc-updates': { type: 'string', default: '100000' },
        'core-loads': { type: 'string', default: '50' },
        'max-rate': { type: 'string', default: '5000' },
        'no-record': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }).values
  } catch (err) {
    fail((err as Error).message)
  }
  if (values.help) {
    console.log(USAGE)
    process.exit(0)
  }
  const systems = values.systems.split(',').map((s) => s.trim())
  for (const s of systems) if (!(SYSTEM_KINDS as readonly string[]).includes(s)) fail(`--systems: unknown system "${s}" (one of ${SYSTEM_KINDS.join(', ')})`)
  if (new Set(systems).size !== systems.length) fail('--systems: a system is named twice')
  const rates = values.rates.split(',').map((r) => r.trim())
  for (const r of rates) if (!/^\d+$/.test(r) || Number(r) < 10 || Number(r) > 100_000) fail(`--rates: "${r}" is not an integer from 10 to 100000 (offered ops/s)`)
  const positive = (name: string, raw: string, min: number) => {
    const n = Number(raw)
    if (!/^\d+(\.\d+)?$/.test(raw) || n < min || n > 3_600) fail(`--${name}: "${raw}" is not a number of seconds from ${min} to 3600`)
    return n
  }
  const scenarios = values.scenarios.split(',').map((s) => s.trim())
  for (const s of scenarios) if (!(SCENARIOS as readonly string[]).includes(s)) fail(`--scenarios: unknown scenario "${s}" (one of ${SCENARIOS.join(', ')})`)
  const count = (name: string, raw: string, max: number) => {
    if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > max) fail(`--${name}: "${raw}" is not an integer from 1 to ${max}`)
    return Number(raw)
  }
  const docMb = values['join-doc-mb']
  if (!/^\d+(\.\d+)?$/.test(docMb) || Number(docMb) < 0.1 || Number(docMb) > 200) fail(`--join-doc-mb: "${docMb}" is not a number of MB from 0.1 to 200`)
  return {
    scenarios: new Set(scenarios),
    observers: count('observers', values.observers, 20_000),
    joiners: count('joiners', values.joiners, 2_000),
    idleSockets: count('idle-sockets', values['idle-sockets'], 15_000),
    edges: count('edges', values.edges, MAX_EDGES),
    coreDocUpdates: count('core-doc-updates', values['core-doc-updates'], 1_000_000),
    coreLoads: count('core-loads', values['core-loads'], 10_000),
    maxRate: count('max-rate', values['max-rate'], 100_000),
    joinDocMb: Number(docMb),
    systems: systems as SystemKind[],
    rates: rates.map(Number),
    durationS: positive('duration-s', values['duration-s'], 1),
    warmupS: positive('warmup-s', values['warmup-s'], 0),
    record: !values['no-record'],
  }
}


/** Error lines in the servers' logs, to show beside the numbers. */
function logErrors(system: RunningSystem): string[] {
  if (!existsSync(system.logsDir)) return []
  const out: string[] = []
  for (const f of readdirSync(system.logsDir).filter((name) => name.endsWith('.log'))) {
    const lines = readFileSync(join(system.logsDir, f), 'utf8').split('\n')
    const bad = lines.filter((l) => /"level":(50|60)|\bERROR\b|\bFATAL\b/.test(l))
    if (bad.length > 0) out.push(`${f}: ${bad.length} error lines, first: ${bad[0]!.slice(0, 300)}`)
  }
  return out
}

function machine(): string {
  const model = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? 'unknown CPU'
  return `${model}, ${cpus().length} cores, ${(totalmem() / 1024 ** 3).toFixed(1)} GiB RAM`
}

function commit(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT }).toString().trim()
    const dirty = execFileSync('git', ['status', '--porcelain'], { cwd: ROOT }).toString().trim() !== ''
    return `${head}${dirty ? ' (working tree dirty)' : ' (clean)'}`
  } catch (err) {
    return `unknown (${(err as Error).message.split('\n')[0]})`
  }
}

async function main(): Promise<void> {
  const options = parseOptions()
  const say = (line: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`)
  let stopping = false
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (stopping) return
      stopping = true
      say(`${signal}: stopping every server started`)
      void stopAllSystems().finally(() => process.exit(130))
    })
  }
  const started = new Date()
  const loadAtStart = loadavg()[0] ?? NaN
  const results: TypingStormResult[] = []
  const notes: string[] = []
  for (const rate of options.scenarios.has('typing') ? options.rates : []) {
    for (const kind of options.systems) {
      const system = await startSystem(kind, { say, ...(kind === 'docflow' ? { edges: options.edges } : {}) })
      try {
        const r = await typingStorm(system, { rate, durationS: options.durationS, warmupS: options.warmupS, say })
        results.push(r)
        for (const e of logErrors(system)) notes.push(`${r.system} @ ${int(rate)} logs: ${e}`)
      } finally {
        await system.stop()
      }
    }
  }

  const observers: Outcome<ObserversResult>[] = []
  const joins: Outcome<JoinScenarioResult>[] = []
  for (const kind of options.systems.filter((k) => CROWD_SYSTEMS.includes(k))) {
    if (!options.scenarios.has('observers') && !options.scenarios.has('join')) break
    const system = await startSystem(kind, { say })
    try {
      if (options.scenarios.has('observers')) {
        try {
          observers.push({ ok: true, result: await observersScenario(system, { observers: options.observers, durationS: options.durationS, say }) })
        } catch (err) {
          say(`${system.name} observers failed: ${(err as Error).stack}`)
          observers.push({ ok: false, system: system.name, error: (err as Error).message })
        }
      }
      if (options.scenarios.has('join')) {
        try {
          joins.push({ ok: true, result: await joinScenario(system, { joiners: options.joiners, docMb: options.joinDocMb, say }) })
        } catch (err) {
          say(`${system.name} join failed: ${(err as Error).stack}`)
          joins.push({ ok: false, system: system.name, error: (err as Error).message })
        }
      }
      for (const e of logErrors(system)) notes.push(`${system.name} (observers, join) logs: ${e}`)
    } finally {
      await system.stop()
    }
  }

  const idle: Outcome<IdleResult>[] = []
  if (options.scenarios.has('idle') && options.systems.includes('docflow')) {
    const system = await startSystem('docflow', { say })
    try {
      idle.push({ ok: true, result: await idleScenario(system, { sockets: options.idleSockets, say }) })
      for (const e of logErrors(system)) notes.push(`${system.name} (idle) logs: ${e}`)
    } catch (err) {
      say(`${system.name} idle failed: ${(err as Error).stack}`)
      idle.push({ ok: false, system: system.name, error: (err as Error).message })
    } finally {
      await system.stop()
    }
  }

  const cold: Outcome<ColdLoadResult>[] = []
  const stateAt: Outcome<StateAtResult>[] = []
  const wantsDoc = options.scenarios.has('cold-load') || options.scenarios.has('state-at')
  if (wantsDoc && options.systems.includes('docflow')) {
    const system = await startSystem('docflow', { say })
    try {
      const r = await coreLoads(system, { updates: options.coreDocUpdates, loads: options.coreLoads, cold: options.scenarios.has('cold-load'), stateAt: options.scenarios.has('state-at'), say })
      if (r.cold) cold.push({ ok: true, result: r.cold })
      if (r.stateAt) stateAt.push({ ok: true, result: r.stateAt })
      for (const e of logErrors(system)) notes.push(`${system.name} (cold-load, state-at) logs: ${e}`)
    } catch (err) {
      say(`${system.name} cold-load / state-at failed: ${(err as Error).stack}`)
      const failed = { ok: false as const, system: system.name, error: (err as Error).message }
      if (options.scenarios.has('cold-load')) cold.push(failed)
      if (options.scenarios.has('state-at')) stateAt.push(failed)
    } finally {
      await system.stop()
    }
  }

  const materialize: Outcome<MaterializeResult>[] = []
  if (options.scenarios.has('materialize') && options.systems.includes('docflow')) {
    try {
      let max = sustainedMax(results)
      if (!max) {
        const probe = await startSystem('docflow', { say })
        try {
          say(`ingest → materialized: probing DocFlow's sustained maximum at ${int(options.maxRate)} ops/s offered`)
          max = sustainedMax([await typingStorm(probe, { rate: options.maxRate, durationS: options.durationS, warmupS: options.warmupS, docPrefix: 'probe', say })])
        } finally {
          await probe.stop()
        }
        if (!max) throw new Error(`the probe storm at ${int(options.maxRate)} ops/s did not converge`)
        max.from = `probe storm at ${int(options.maxRate)} offered`
      }
      const system = await startSystem('docflow', { say })
      try {
        materialize.push({ ok: true, result: await materializeAtHalf(system, max, { durationS: options.durationS, warmupS: options.warmupS, say }) })
        for (const e of logErrors(system)) notes.push(`${system.name} (materialize) logs: ${e}`)
      } finally {
        await system.stop()
      }
    } catch (err) {
      say(`DocFlow materialize failed: ${(err as Error).stack}`)
      materialize.push({ ok: false, system: 'DocFlow', error: (err as Error).message })
    }
  }

  const lines: string[] = [TABLE_HEADER, '|---|---|---|---|---|---|---|---|', ...results.map(row), '']
  lines.push('Server CPU and memory by process (driver not counted):')
  for (const r of results) {
    lines.push(`- ${r.system} @ ${int(r.rate)}: ${r.server.processes} processes; ${formatBreakdown(r.server)}; driver ${r.driver.cores.toFixed(2)} cores in ${r.driver.processes} processes`)
  }
  for (const r of results) {
    if (r.edges) lines.push(`- ${r.label} @ ${int(r.rate)}, each edge in the window: ${formatEdges(r.edges)}`)
  }
  for (const r of results) lines.push(`- ${r.system} @ ${int(r.rate)}: server PSS over the window (${int(r.server.pssSamples ?? NaN)} samples): mean ${int(r.server.meanPssMb ?? NaN)} / peak ${int(r.server.peakPssMb ?? NaN)} MB; the table's is the last sample`)
  for (const rate of new Set(results.map((r) => r.rate))) {
    const docflow = resultAt(results, rate, 'DocFlow')?.server
    const peer = resultAt(results, rate, 'Hocuspocus')?.server
    if (docflow && peer) lines.push(`- PSS @ ${int(rate)}, DocFlow ÷ Hocuspocus + PostgreSQL: ${(docflow.pssMb / peer.pssMb).toFixed(2)}× at the window's end, ${((docflow.meanPssMb ?? NaN) / (peer.meanPssMb ?? NaN)).toFixed(2)}× by the window's means`)
  }
  for (const r of results) {
    const d = r.driverResult
    lines.push(`- ${r.system} @ ${int(r.rate)}: typed ${int(d.sentInWindow)} / received ${int(d.receivedInWindow)} in the ${r.windowS.toFixed(1)} s window; converged ${d.converged}/${d.docs} docs; persisted from ${r.persisted.n} sampled edits`)
  }
  for (const r of results) {
    if (r.ingestToCommitted) lines.push(`- DocFlow @ ${int(r.rate)} ingest → materialized (op_log committed_at − ingest_ts, ${int(r.ingestToCommitted.n)} rows): p50 ${ms(r.ingestToCommitted.p50Ms)} / p95 ${ms(r.ingestToCommitted.p95Ms)} ms`)
  }
  for (const n of notes) lines.push(`- ${n}`)
  lines.push('')
  if (observers.length > 0) lines.push(...observersLines(observers), '')
  if (joins.length > 0) lines.push(...joinLines(joins), '')
  if (idle.length > 0) lines.push(...idleLines(idle), '')
  for (const o of cold) lines.push(...coldLoadLines(o), '')
  for (const o of stateAt) lines.push(...stateAtLines(o), '')
  for (const o of materialize) lines.push(...materializeLines(o), '')
  const rates = options.scenarios.has('typing') ? [...options.rates] : []
  if (rates.length === 0) lines.splice(0, 4) // no typing table or its breakdown heading (--scenarios without typing)
  for (const rate of rates.slice(0, -1)) lines.push(`at ${int(rate)} offered: ${ratioLine(results, rate)}`)
  if (rates.length > 0) lines.push(ratioLine(results, rates[rates.length - 1]!))
  console.log(`\n${lines.join('\n')}`)

  if (options.record) {
    const args = process.argv.slice(2)
    const command = args.length > 0 ? `npm run bench -- ${args.join(' ')}` : 'npm run bench'
    const entry = [`## ${started.toISOString()}`, '', `- machine: ${machine()}`, `- commit: ${commit()}`, `- command: \`${command}\``, `- load average (1 min) at the start: ${loadAtStart.toFixed(2)} (the box is shared)`, '', ...lines, '', ''].join('\n')
    if (!existsSync(RESULTS)) writeFileSync(RESULTS, '# npm run bench: every run\n\nAppended by loadtest/bench.ts; newest last.\n\n')
    appendFileSync(RESULTS, entry)
    say(`recorded in ${RESULTS}`)
  }
  const failed = results.filter((r) => invalid(r) !== null)
  const crowdFailed = [
    ...scenarioFailed(observers, joins),
    ...idle.flatMap((o) => (o.ok ? [] : [`${o.system} idle: ${o.error}`])),
    ...cold.flatMap((o) => (o.ok ? (o.result.cold ? [] : ['DocFlow cold-load: not cold (the op log changed during the loads)']) : [`${o.system} cold-load: ${o.error}`])),
    ...stateAt.flatMap((o) => (o.ok ? [] : [`${o.system} state-at: ${o.error}`])),
    ...materialize.flatMap((o) => (o.ok ? (o.result.run.converged ? [] : ['DocFlow materialize: docs diverged']) : [`${o.system} materialize: ${o.error}`])),
  ]
  if (crowdFailed.length > 0) {
    console.error(`bench: ${crowdFailed.join('; ')}`)
    process.exitCode = 1
  }
  if (failed.length > 0) {
    console.error(`bench: ${failed.map((r) => `${r.system} @ ${int(r.rate)}: ${invalid(r)}`).join(', ')}`)
    process.exitCode = 1
  }
}

main().catch(async (err: unknown) => {
  console.error(`bench: ${(err as Error).stack ?? String(err)}`)
  await stopAllSystems()
  process.exit(1)
})
