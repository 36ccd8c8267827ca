import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { SNAPSHOTS_FOLDER, SUPERSEDED_SNAPSHOT_TAG, AGG_MAX_AGE_MS, AGG_STREAM, CLEAN_MAX_AGE_MS, CLEAN_STREAM, CLEAN_SUBJECTS, DEAD_LETTER_SUBJECTS, DLQ_MAX_AGE_MS, DLQ_STREAM, FEED_DEDUP_WINDOW_MS, EDIT_DEDUP_WINDOW_MS, EDIT_PARTITIONS_VAR, Limit, MAX_EDIT_PARTITIONS, REVOCATIONS_BUCKET, REVOCATION_TTL_MS, TENANTS_BUCKET } from '../../contracts/mod.ts'
import { LIMIT_DEFAULTS } from '../../edge/limits.ts'
import { SNAPSHOT_RETENTION_DEFAULTS } from '../../core/snapshot-retention.ts'
import { JWT_VARS, BLOB_STORE_VARS } from '../../runtime/config.ts'
import { buildServers } from '../../scripts/lib/build.ts'
import {
  alertExpressions,
  blockProblems,
  codeMetrics,
  configEnvNames,
  definedTemplates,
  lexTemplate,
  missingValuesPaths,
  natsDependencyProblems,
  natsValuesProblems,
  processEnvNames,
  promqlMetricNames,
  templateEnvNames,
  unknownMetrics,
  unknownNames,
  usedTemplates,
  valuesPaths,
} from './lint.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const CHART = join(ROOT, 'helm/docflow')
const TEMPLATES = join(CHART, 'templates')
const read = (path: string) => readFileSync(path, 'utf8')
const rel = (path: string) => relative(ROOT, path)

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]))
}

const templateFiles = readdirSync(TEMPLATES)
  .filter((f) => /\.(ya?ml|tpl|txt)$/.test(f))
  .map((f) => join(TEMPLATES, f))
const chart = parse(read(join(CHART, 'Chart.yaml'))) as Record<string, unknown>
const values = parse(read(join(CHART, 'values.yaml'))) as Record<string, any>
const schema = JSON.parse(read(join(CHART, 'values.schema.json'))) as Record<string, any>

/** Env var names a process may be given: its config map in main.ts, plus process.env reads in its folder and runtime/. */
function allowedEnv(component: 'edge' | 'core'): Set<string> {
  const main = read(join(ROOT, component, 'main.ts'))
  const names = new Set(configEnvNames(main))
  // Token settings are shared by every verifying process and spread in as a whole.
  if (main.includes('...JWT_VARS')) for (const n of Object.values(JWT_VARS)) names.add(n)
  if (main.includes(': EDIT_PARTITIONS_VAR,')) names.add(EDIT_PARTITIONS_VAR)
  // The blob store's settings (runtime/config.ts) are read as a whole where the store is opened.
  if (main.includes('BLOB_STORE_VARS)')) for (const n of Object.values(BLOB_STORE_VARS)) names.add(n)
  // The edge's limits are spread in as EDGE_LIMIT_<NAME>, one per LIMIT_DEFAULTS key.
  if (main.includes('...LIMIT_VARS')) for (const key of Object.keys(LIMIT_DEFAULTS)) names.add(limitEnvName(key))
  for (const dir of [component, 'runtime']) {
    for (const file of walk(join(ROOT, dir)).filter((f) => f.endsWith('.ts'))) for (const n of processEnvNames(read(file))) names.add(n)
  }
  return names
}

/** edge/main.ts's name for a limit: connectionUpdatesPerS -> EDGE_LIMIT_CONNECTION_UPDATES_PER_S. */
function limitEnvName(key: string): string {
  return `EDGE_LIMIT_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`
}

/**
 * The env the edge Deployment gets from `limits` (values edge.limits), rendered the way helm
 * renders the two shapes the template uses: `- name: X` / `value: {{ .Values.edge.limits.<key> | int64 | quote }}`
 * and, for an optional string, `{{- with .Values.edge.limits.<key> }}` / `- name: X` / `value: {{ . | quote }}` / `{{- end }}`.
 * Returns the env and the values keys it read.
 */
function renderLimitEnv(template: string, limits: Record<string, unknown>): { env: Record<string, string>; keys: string[] } {
  const env: Record<string, string> = {}
  const keys: string[] = []
  for (const m of template.matchAll(/^\s*- name: (\w+)\n\s+value: \{\{ \.Values\.edge\.limits\.(\w+) \| int64 \| quote \}\}$/gm)) {
    keys.push(m[2]!)
    env[m[1]!] = String(Math.trunc(Number(limits[m[2]!] ?? 0)))
  }
  for (const m of template.matchAll(/\{\{- with \.Values\.edge\.limits\.(\w+) \}\}\n(?:\s*#.*\n)*\s*- name: (\w+)\n\s+value: \{\{ \. \| quote \}\}\n\s*\{\{- end \}\}/g)) {
    keys.push(m[1]!)
    if (limits[m[1]!]) env[m[2]!] = String(limits[m[1]!])
  }
  return { env, keys }
}

/**
 * The image's /app as far as the containers' commands go: the repo with `npm run build`'s dist/
 * (scripts/build.ts calls buildServers the same way), built once for the tests that need it.
 */
let app: string | null = null
function builtApp(): string {
  if (app) return app
  const dir = mkdtempSync(join(tmpdir(), 'chart-app-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  buildServers(ROOT, join(dir, 'dist'), (line) => t.fail(`type errors: ${line}`))
  app = dir
  return app
}

/** The container command of a component's Deployment (`command: ["node", ...]`). */
function containerCommand(component: 'edge' | 'core'): string[] {
  const line = /^\s+command: (\["node".*\])$/m.exec(read(join(TEMPLATES, `${component}-deployment.yaml`)))
  return line ? (JSON.parse(line[1]!) as string[]) : []
}

/** Runs the edge's container command with `env` only; it checks its environment before connecting anywhere. */
function edgeConfigErrors(env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  const [, ...args] = containerCommand('edge')
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd: builtApp(), env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env }, timeout: 60_000 }, (err, _stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stderr })
    })
  })
}

/** Env names the chart can set on a component: literal list entries, values <component>.env keys, schema-allowed keys. */
function chartEnv(component: 'edge' | 'core'): { template: string[]; values: string[]; schema: string[] } {
  return {
    template: templateEnvNames(read(join(TEMPLATES, `${component}-deployment.yaml`))),
    values: Object.keys(values[component]?.env ?? {}),
    schema: Object.keys(schema.properties?.[component]?.properties?.env?.properties ?? {}),
  }
}

t.test('helm - Chart.yaml, values.yaml and values.schema.json parse', async (t) => {
  t.equal(chart.apiVersion, 'v2')
  t.equal(chart.name, 'docflow')
  t.type(chart.version, 'string')
  t.type(values.edge, 'object')
  t.type(values.core, 'object')
  t.type(schema.properties, 'object')
  // The parser used here must reject what helm rejects, or the checks above prove nothing.
  t.throws(() => parse('a: 1\na: 2\n'), 'duplicate keys are an error')
  t.throws(() => parse('a: [1, 2\nb: 3\n'), 'unclosed flow sequence is an error')
})

t.test('helm - every YAML file outside templates/ parses', async (t) => {
  const files = walk(join(ROOT, 'helm')).filter((f) => /\.ya?ml$/.test(f) && !f.startsWith(TEMPLATES))
  t.ok(files.length >= 2, `found ${files.map(rel).join(', ')}`)
  for (const file of files) t.doesNotThrow(() => parse(read(file)), rel(file))
})

t.test('helm - template delimiters are balanced and every block has its end', async (t) => {
  t.ok(templateFiles.length >= 8, `${templateFiles.length} template files`)
  for (const file of templateFiles) {
    const lexed = lexTemplate(read(file))
    t.same([...lexed.problems, ...blockProblems(lexed.actions)], [], rel(file))
  }
  // The checks catch what they are for.
  t.match(lexTemplate('a: {{ .Values.x }\nb: 1\n').problems, [/never closed/])
  t.match(lexTemplate('a: .Values.x }}\n').problems, [/without an opening/])
  t.match(lexTemplate('a: {{ .Values.x {{ .y }}\n').problems, [/inside the action/])
  t.same(lexTemplate('a: "{{`{{ $labels.x }}`}}" {{- /* }} " */ -}} {{ printf "}}" }}\n').problems, [], 'raw strings, strings and comments may hold delimiters')
  t.match(blockProblems(lexTemplate('{{- define "x" -}}\ny\n').actions), [/define "x".*no matching end/])
  t.match(blockProblems(lexTemplate('{{ if .a }}{{ with .b }}{{ end }}').actions), [/if \.a.*no matching end/])
  t.match(blockProblems(lexTemplate('x{{ end }}').actions), [/without a block/])
  t.same(blockProblems(lexTemplate('{{ define "x" }}{{ if .a }}{{ else if .b }}{{ else }}{{ end }}{{ end }}').actions), [])
})

t.test('helm - every template included is defined in _helpers.tpl', async (t) => {
  const defined = new Set(templateFiles.flatMap((f) => definedTemplates(lexTemplate(read(f)).actions)))
  t.ok(defined.has('docflow.fullname'), [...defined].join(', '))
  for (const file of templateFiles) {
    const missing = usedTemplates(lexTemplate(read(file)).actions).filter((name) => !defined.has(name))
    t.same(missing, [], rel(file))
  }
})

t.test('helm - every .Values path the templates read exists in values.yaml', async (t) => {
  const files = templateFiles.filter((f) => /\.(ya?ml|tpl)$/.test(f))
  let count = 0
  for (const file of files) {
    const paths = valuesPaths(lexTemplate(read(file)).actions)
    count += paths.length
    t.same(missingValuesPaths(paths, values), [], rel(file))
  }
  t.ok(count > 50, `${count} values references checked`)
  // Typos and paths under `with` scopes are caught.
  const typo = valuesPaths(lexTemplate('{{ .Values.edge.prot }}').actions)
  t.match(missingValuesPaths(typo, values), [/\.Values\.edge\.prot is not in values\.yaml/])
  const scoped = valuesPaths(lexTemplate('{{ with .Values.provisioning }}{{ with .aggregate }}{{ .maxByte }}{{ end }}{{ end }}').actions)
  t.same(scoped.map((p) => p.path.join('.')), ['provisioning', 'provisioning.aggregate', 'provisioning.aggregate.maxByte'])
  t.match(missingValuesPaths(scoped, values), [/provisioning\.aggregate\.maxByte/])
  t.same(missingValuesPaths(valuesPaths(lexTemplate('{{ $.Values.nats.fullnameOverride }}').actions), values), [], 'empty string values exist')
})

t.test('helm - every env var set on edge and core is one the code reads', async (t) => {
  for (const component of ['edge', 'core'] as const) {
    const allowed = allowedEnv(component)
    t.ok(allowed.has(component === 'edge' ? 'EDGE_PORT' : 'DATABASE_URL') && allowed.has('NATS_URL') && allowed.has('LOG_LEVEL'), `${component} reads ${[...allowed].join(', ')}`)
    const set = chartEnv(component)
    t.ok(set.template.length >= 5, `${component}-deployment.yaml sets ${set.template.join(', ')}`)
    t.ok(set.values.length >= 1 && set.schema.length >= set.values.length, `${component}.env has ${set.values.join(', ')}`)
    t.same(unknownNames(set.template, allowed, `${component}-deployment.yaml sets`), [], `${component}-deployment.yaml env names`)
    t.same(unknownNames(set.values, allowed, `values ${component}.env has`), [], `values ${component}.env names`)
    t.same(unknownNames(set.schema, allowed, `values.schema.json allows ${component}.env`), [], `values.schema.json ${component}.env names`)
    t.same(set.values.filter((n) => !set.schema.includes(n)), [], `values.schema.json accepts every ${component}.env key`)
    t.equal(schema.properties[component].properties.env.additionalProperties, false, `${component}.env rejects unknown names at install`)
  }
  // The secrets each process needs come from the Secret.
  const core = read(join(TEMPLATES, 'core-deployment.yaml'))
  for (const name of ['DATABASE_URL', 'DOCFLOW_JWT_SECRET', 'CORE_NATS_USER', 'CORE_NATS_PASS']) {
    t.match(core, new RegExp(`- name: ${name}\\n\\s+valueFrom:\\n\\s+secretKeyRef:`), `core ${name} from the Secret`)
  }
  const edge = read(join(TEMPLATES, 'edge-deployment.yaml'))
  for (const name of ['DOCFLOW_JWT_SECRET', 'EDGE_NATS_USER', 'EDGE_NATS_PASS']) {
    t.match(edge, new RegExp(`- name: ${name}\\n\\s+valueFrom:\\n\\s+secretKeyRef:`), `edge ${name} from the Secret`)
  }
  // A typo is reported.
  const edgeAllowed = allowedEnv('edge')
  t.same(unknownNames(templateEnvNames('env:\n  - name: EDGE_PROT\n    value: "8080"\n  - name: http\n'), edgeAllowed, 'x'), ['x EDGE_PROT is not read by the code'])
  t.same(unknownNames(['CORE_MAX_BATCH'], edgeAllowed, 'x'), ['x CORE_MAX_BATCH is not read by the code'], 'core settings are not edge settings')
  t.same(configEnvNames("loadConfigOrExit(Config, {\n  port: 'EDGE_PORT',\n  natsUrl: \"NATS_URL\",\n})"), ['EDGE_PORT', 'NATS_URL'])
})

t.test('helm - edge.limits render into the edge env as the EDGE_LIMIT_* names the edge reads, with the code defaults', async (t) => {
  const limits = values.edge.limits as Record<string, unknown>
  const { env, keys } = renderLimitEnv(read(join(TEMPLATES, 'edge-deployment.yaml')), limits)
  t.same([...keys].sort(), Object.keys(limits).sort(), 'every edge.limits value is rendered, once')
  const numeric = Object.keys(limits).filter((k) => k !== 'clientIpHeader')
  t.same([...numeric].sort(), Object.keys(LIMIT_DEFAULTS).sort(), 'edge.limits lists every limit of edge/limits.ts, and nothing else')
  for (const key of Object.keys(LIMIT_DEFAULTS)) {
    t.equal(env[limitEnvName(key)], String(LIMIT_DEFAULTS[key as keyof typeof LIMIT_DEFAULTS]), `${limitEnvName(key)} renders the code's default`)
  }
  t.equal(env.EDGE_CLIENT_IP_HEADER, 'x-forwarded-for', 'the client address comes from the ALB\'s header')
  t.equal(renderLimitEnv(read(join(TEMPLATES, 'edge-deployment.yaml')), { ...limits, clientIpHeader: '' }).env.EDGE_CLIENT_IP_HEADER, undefined, 'an empty clientIpHeader sets nothing')
  // Large values stay integers (helm holds numbers as float64; int64 keeps 268435456 from rendering as 2.68435456e+08).
  t.match(read(join(TEMPLATES, 'edge-deployment.yaml')), /value: \{\{ \.Values\.edge\.limits\.maxDocumentBytes \| int64 \| quote \}\}/)
  const schemaLimits = schema.properties.edge.properties.limits
  t.same(Object.keys(schemaLimits.properties).sort(), Object.keys(limits).sort(), 'values.schema.json describes every edge.limits key')
  t.equal(schemaLimits.additionalProperties, false, 'a misspelt limit is refused at install')
  t.same([...schemaLimits.required].sort(), [...numeric].sort(), 'a numeric limit set to null is refused (int64 would render it 0: off, or refusing everything)')

  // The edge itself reads these names: each is named when its value is bad, and the chart's
  // values pass (only the deliberately bad EDGE_PORT is named).
  const names = Object.keys(env)
  t.equal(names.length, Object.keys(LIMIT_DEFAULTS).length + 1, `rendered ${names.join(', ')}`)
  const bad = Object.fromEntries(names.map((n) => [n, 'X_not_a_number']))
  const [refused, accepted] = await Promise.all([edgeConfigErrors(bad), edgeConfigErrors({ ...env, EDGE_PORT: 'not-a-port' })])
  t.equal(refused.code, 2, refused.stderr)
  for (const n of names) t.match(refused.stderr, new RegExp(`^  ${n}=`, 'm'), `the edge reads ${n}`)
  t.equal(accepted.code, 2, accepted.stderr)
  t.same(accepted.stderr.split('\n').filter((l) => l.startsWith('  ')).map((l) => l.trim().split('=')[0]), ['EDGE_PORT'], "the chart's limit values are ones the edge accepts")
})

t.test('helm - alert expressions use only metric names the code exports', async (t) => {
  const known = new Map([...codeMetrics(read(join(ROOT, 'edge/metrics.ts'))), ...codeMetrics(read(join(ROOT, 'core/metrics.ts')))])
  t.ok(known.get('docflow_edge_quota_rejections_total') === 'Counter' && known.get('docflow_core_ingest_to_commit_seconds') === 'Histogram', `${known.size} metrics in the code`)
  // Being added in parallel: accepted by name until core/metrics.ts has them.
  for (const name of ['docflow_core_agg_usage_ratio', 'docflow_core_consumer_pending']) {
    if (!known.has(name)) {
      t.comment(`${name} is not in core/metrics.ts yet; accepted by name`)
      known.set(name, 'Gauge')
    }
  }
  const rules = read(join(TEMPLATES, 'prometheusrule.yaml'))
  const exprs = alertExpressions(rules)
  t.equal(exprs.length, [...rules.matchAll(/^\s*- alert:/gm)].length, 'one expression per alert')
  const used = new Set<string>()
  for (const { expr, line } of exprs) {
    const names = promqlMetricNames(expr)
    t.ok(names.length > 0, `line ${line} selects a metric: ${expr}`)
    t.same(unknownMetrics(names, known), [], `line ${line}: ${expr}`)
    for (const n of names) used.add(n.replace(/_(bucket|sum|count)$/, ''))
  }
  // The tenant-rate alert selects the limits contracts/limits.ts names.
  t.match(rules, new RegExp(`docflow_edge_limit_refusals_total\\{limit=~"${Limit.TenantUpdates}\\|${Limit.TenantBytes}"\\}`), 'tenant-rate alert')
  t.match(rules, new RegExp(`docflow_edge_limit_refusals_total\\{limit="${Limit.DocumentBytes}"\\}`), 'document-size alert')
  for (const name of ['docflow_edge_limit_refusals_total', 'docflow_edge_quota_rejections_total', 'docflow_core_worker_errors_total', 'docflow_core_dead_letters_total', 'docflow_core_ingest_to_commit_seconds', 'docflow_core_consumer_oldest_pending_seconds', 'docflow_core_partition_blocked', 'docflow_core_consumer_pending']) {
    t.ok(used.has(name), `an alert uses ${name}`)
  }
  // Lag, not AGG usage: AGG is sized to hold its sources, so its fill level says nothing about loss.
  t.notMatch(rules, /docflow_core_agg_usage_ratio/)
  t.match(rules, /max by \(partition\) \(docflow_core_consumer_oldest_pending_seconds\) > \{\{ \.consumerOldestPendingSeconds \}\}/)
  t.equal(values.monitoring.prometheusRule.consumerOldestPendingSeconds, 60)
  t.match(rules, /max by \(partition\) \(docflow_core_consumer_pending\)/)
  // Misspelt names, gauge series with histogram suffixes and unknown metrics are caught.
  t.same(unknownMetrics(promqlMetricNames('sum(rate(docflow_edge_publish_failure_total[5m])) > 0'), known), ['docflow_edge_publish_failure_total'])
  t.same(unknownMetrics(promqlMetricNames('docflow_edge_connections_bucket > 1'), known), ['docflow_edge_connections_bucket'])
  t.same(unknownMetrics(promqlMetricNames('up{job="core"} == 0 and on(instance) docflow_core_leases_held offset 5m'), known), ['up'])
  t.same(promqlMetricNames('histogram_quantile(0.95, sum by (le) (rate(docflow_core_ingest_to_commit_seconds_bucket{tenant="a"}[5m]))) > {{ .x }}'), ['docflow_core_ingest_to_commit_seconds_bucket'])
  t.same(alertExpressions('  - alert: A\n    expr: |\n      sum(x)\n        > 1\n    for: 1m\n'), [{ expr: 'sum(x) > 1', line: 2 }])
})

t.test('helm - NATS runs 3 JetStream nodes on PVCs with sync_interval always, in operator mode', async (t) => {
  t.same(natsValuesProblems(values), [], 'nats values')
  t.same(natsDependencyProblems(chart), [], 'nats dependency in Chart.yaml')
  const broken = structuredClone(values)
  broken.nats.config.cluster.replicas = 1
  delete broken.nats.config.jetstream.merge.sync_interval
  broken.nats.config.jetstream.fileStore.enabled = false
  broken.nats.container.image.tag = '2.10.11-alpine'
  delete broken.nats.config.jetstream.fileStore.maxSize
  t.match(natsValuesProblems(broken), [/cluster\.replicas is 1/, /fileStore\.enabled is false/, /sync_interval is undefined/, /image\.tag .*2\.12\.8/, /maxSize is undefined/])
  t.match(natsDependencyProblems({ dependencies: [{ name: 'nats', version: '1.3.15', repository: 'https://nats-io.github.io/k8s/helm/charts/' }] }), [/older than 2\.12\.8/, /condition/])
})

t.test('helm - provisioning and alerts use the numbers in contracts/', async (t) => {
  const p = values.provisioning
  t.equal(p.aggregate.stream, AGG_STREAM)
  t.equal(p.aggregate.maxAgeMs, AGG_MAX_AGE_MS)
  t.equal(p.aggregate.duplicateWindowMs, EDIT_DEDUP_WINDOW_MS)
  t.equal(p.tenantsBucket.name, TENANTS_BUCKET)
  t.equal(p.aggregate.replicas, 3)
  t.equal(p.tenantsBucket.replicas, 3)
  t.equal(p.revocationsBucket.name, REVOCATIONS_BUCKET)
  t.equal(p.revocationsBucket.replicas, 3)
  t.match(p.feeds, {
    deadLetters: { stream: DLQ_STREAM, subjects: DEAD_LETTER_SUBJECTS, replicas: 3, maxAgeMs: DLQ_MAX_AGE_MS, duplicateWindowMs: FEED_DEDUP_WINDOW_MS },
    clean: { stream: CLEAN_STREAM, subjects: CLEAN_SUBJECTS, replicas: 3, maxAgeMs: CLEAN_MAX_AGE_MS, duplicateWindowMs: FEED_DEDUP_WINDOW_MS },
  }, "core's feed streams as contracts/ names them")
  t.equal(Number(/^(\d+)h$/.exec(p.revocationsBucket.ttl)?.[1]) * 3_600_000, REVOCATION_TTL_MS, 'revocations are kept as long as contracts/ says')
  t.ok(Number.isInteger(values.editPartitions) && values.editPartitions >= 64 && values.editPartitions <= MAX_EDIT_PARTITIONS, `editPartitions ${values.editPartitions}: room for the ~21 busy core processes 250K ops/s takes, 3x, within ${MAX_EDIT_PARTITIONS}`)
  for (const component of ['edge', 'core']) {
    t.match(read(join(TEMPLATES, `${component}-deployment.yaml`)), new RegExp(`- name: ${EDIT_PARTITIONS_VAR}\\n\\s+value: \\{\\{ \\.Values\\.editPartitions \\| quote \\}\\}`), `${component} gets editPartitions`)
  }
  t.match(read(join(TEMPLATES, 'prometheusrule.yaml')), /< \{\{ \$\.Values\.editPartitions \}\}/, 'the unowned-partition alert counts editPartitions')
})

t.test('helm - edge and core run the compiled build in /app, without a TypeScript loader', async (t) => {
  for (const component of ['edge', 'core'] as const) {
    const deployment = read(join(TEMPLATES, `${component}-deployment.yaml`))
    t.match(deployment, /^\s+workingDir: \/app$/m, `${component} runs in /app`)
    const command = containerCommand(component)
    t.same(command.slice(0, 1), ['node'], `${component}: ${JSON.stringify(command)}`)
    t.notOk(command.some((arg) => arg.includes('tsx') || arg.endsWith('.ts')), `${component} runs JavaScript`)
    t.ok(existsSync(join(builtApp(), command[1] ?? 'missing')), `${command[1]} is in what npm run build makes`)
  }
})

t.test('helm - edge drains within its grace period and core keeps a standby', async (t) => {
  const edge = values.edge
  // preStop sleep, then edge.stop() waits out in-flight publishes (ack timeout x attempts).
  const publishBudgetSeconds = (Number(edge.env.EDGE_PUBLISH_ACK_TIMEOUT_MS) * Number(edge.env.EDGE_PUBLISH_ATTEMPTS)) / 1000
  t.ok(Number.isFinite(publishBudgetSeconds) && publishBudgetSeconds > 0, `publish budget ${publishBudgetSeconds}s`)
  t.ok(edge.drain.terminationGracePeriodSeconds > edge.drain.preStopSleepSeconds + publishBudgetSeconds, `grace ${edge.drain.terminationGracePeriodSeconds}s > ${edge.drain.preStopSleepSeconds}s + ${publishBudgetSeconds}s`)
  t.ok(values.core.replicaCount >= 2, 'core has a hot standby')
  t.equal(values.core.pdb.maxUnavailable, 1, 'the core PDB lets one core go at a time (with 2, the other stays)')
  const pdb = read(join(TEMPLATES, 'pdb.yaml'))
  t.match(pdb, /name: \{\{ include "docflow\.fullname" \. \}\}-core[\s\S]*maxUnavailable: \{\{ \.Values\.core\.pdb\.maxUnavailable \}\}/)
  t.match(read(join(TEMPLATES, '_helpers.tpl')), /topologyKey: kubernetes\.io\/hostname\n\s+whenUnsatisfiable: DoNotSchedule/, 'pods of a component spread over nodes (one node\'s loss never takes both cores)')
  for (const component of ['edge', 'core']) {
    const deployment = read(join(TEMPLATES, `${component}-deployment.yaml`))
    t.match(deployment, /terminationGracePeriodSeconds: \{\{ \.Values\.\w+\.drain\.terminationGracePeriodSeconds \}\}/, `${component} grace period from values`)
    t.match(deployment, /preStop:\s+exec:\s+command: \["sleep"/, `${component} preStop`)
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) t.match(deployment, new RegExp(`${probe}:\\s+httpGet:\\s+path: /healthz`), `${component} ${probe} on /healthz`)
  }
  t.ok(existsSync(join(TEMPLATES, 'edge-hpa.yaml')), 'edge HPA')
})

t.test('helm - the S3 lifecycle rule expires snapshots after the days core prunes by', async (t) => {
  const days = values.blobStore.snapshotRetentionDays as number
  t.equal(days, SNAPSHOT_RETENTION_DEFAULTS.retentionDays, 'values default is core\'s default (90 days)')
  const core = read(join(TEMPLATES, 'core-deployment.yaml'))
  t.match(core, /- name: CORE_SNAPSHOT_RETENTION_DAYS\n\s+value: \{\{ \.Values\.blobStore\.snapshotRetentionDays \| quote \}\}/, 'core prunes by the same value')
  const template = read(join(TEMPLATES, 'blob-lifecycle.yaml'))
  // Render the JSON body for a sample release by hand (no helm binary here): prefix "docflow/", 90 days.
  const body = template.slice(template.indexOf('lifecycle.json: |') + 'lifecycle.json: |'.length, template.lastIndexOf('{{- end }}'))
  const rendered = body
    .replaceAll('{{ .Values.blobStore.snapshotRetentionDays }}', String(days))
    .replaceAll('{{ with .Values.blobStore.s3.prefix }}{{ trimSuffix "/" . }}/{{ end }}', 'docflow/')
  t.notMatch(rendered, /\{\{/, 'every action of the body is a known one')
  type Rule = { Filter: { Prefix?: string; And?: { Prefix: string; Tags: { Key: string; Value: string }[] } }; Expiration?: { Days: number }; AbortIncompleteMultipartUpload?: object; Status: string }
  const rules = (JSON.parse(rendered) as { Rules: Rule[] }).Rules
  t.ok(rules.every((r) => r.Status === 'Enabled'), 'every rule enabled')
  const expiring = rules.filter((r) => r.Expiration)
  t.equal(expiring.length, 1, 'one rule expires objects')
  t.same(expiring[0]!.Filter, { And: { Prefix: `docflow/${SNAPSHOTS_FOLDER}/`, Tags: [{ Key: SUPERSEDED_SNAPSHOT_TAG.key, Value: SUPERSEDED_SNAPSHOT_TAG.value }] } }, 'only superseded snapshots (a document\'s newest never; the archive keeps a year)')
  t.equal(expiring[0]!.Expiration!.Days, days)
  t.notOk(expiring[0]!.AbortIncompleteMultipartUpload, 'S3 refuses an upload abort in a rule filtered by tags')
  t.ok(rules.some((r) => r.AbortIncompleteMultipartUpload && r.Filter.Prefix === `docflow/${SNAPSHOTS_FOLDER}/`), 'abandoned uploads are aborted by a rule of their own')
})

t.test('helm - identity-provider tokens are checked for iss and aud, and core cannot be installed without its bucket', async (t) => {
  for (const component of ['edge', 'core']) {
    const deployment = read(join(TEMPLATES, `${component}-deployment.yaml`))
    for (const [key, name] of [['issuer', JWT_VARS.jwtIssuer], ['audience', JWT_VARS.jwtAudience]] as const) {
      t.match(deployment, new RegExp(`\\{\\{- with \\.Values\\.auth\\.${key} \\}\\}\\n\\s+- name: ${name}\\n\\s+value: \\{\\{ \\. \\| quote \\}\\}`), `${component} gets ${name} from auth.${key}`)
    }
  }
  const auth = schema.properties.auth
  t.same(auth.if, { properties: { jwksUrl: { minLength: 1 } }, required: ['jwksUrl'] }, 'when jwksUrl is set')
  t.same(auth.then.required, ['issuer', 'audience'], '… issuer and audience are required')
  t.same([auth.then.properties.issuer.minLength, auth.then.properties.audience.minLength], [1, 1], '… and may not be empty')
  t.match(read(join(TEMPLATES, 'core-deployment.yaml')), /- name: DOCFLOW_S3_BUCKET\n\s+value: \{\{ required "[^"]+" \.Values\.blobStore\.s3\.bucket \| quote \}\}/, 'an install without blobStore.s3.bucket fails with the reason')
  t.notMatch(schema.properties.blobStore.properties.s3.properties.bucket.pattern, /\?\$$/, 'the schema refuses an empty bucket')
})

t.test('helm - the internet-facing edge runs under its own service account, without core\'s cloud role', async (t) => {
  t.match(read(join(TEMPLATES, 'edge-deployment.yaml')), /serviceAccountName: \{\{ include "docflow\.edgeServiceAccountName" \. \}\}/, 'edge: its own account')
  t.match(read(join(TEMPLATES, 'core-deployment.yaml')), /serviceAccountName: \{\{ include "docflow\.serviceAccountName" \. \}\}/, 'core: the annotated account')
  const accounts = read(join(TEMPLATES, 'serviceaccount.yaml')).split(/^---$/m)
  const edge = accounts.find((doc) => doc.includes('docflow.edgeServiceAccountName'))
  t.ok(edge, 'the edge account is rendered')
  t.notMatch(edge ?? '', /^\s*annotations:/m, 'with no annotations (no IRSA role)')
})

t.test('helm - edge and core ops ports (/metrics names tenants) are reachable only from the monitoring namespace', async (t) => {
  const policy = read(join(TEMPLATES, 'networkpolicy.yaml'))
  t.match(policy, /range \$component := list "edge" "core"/, 'a policy for each of edge and core')
  t.match(policy, /- ports:\n\s+- port: \{\{ \$values\.port \}\}\n\s+- ports:/, 'the public port is open (the load balancer)')
  t.match(policy, /- port: \{\{ \$values\.opsPort \}\}\n\s+from:\n\s+- namespaceSelector:\n\s+\{\{- toYaml \$\.Values\.networkPolicy\.monitoringNamespaceSelector/, 'the ops port only from the monitoring namespace')
  t.equal(values.networkPolicy.enabled, true, 'on by default')
})

t.test('helm - every pod the chart runs (edge, core, the provisioning Job) runs as non-root with the pod security context', async (t) => {
  t.equal(values.podSecurityContext.runAsNonRoot, true, 'runAsNonRoot in values')
  const withPods = readdirSync(TEMPLATES).filter((f) => /^kind: (Deployment|Job|StatefulSet|DaemonSet)$/m.test(read(join(TEMPLATES, f))))
  t.same(withPods.sort(), ['core-deployment.yaml', 'edge-deployment.yaml', 'provisioning.yaml'], 'the templates that run pods')
  for (const f of withPods) t.match(read(join(TEMPLATES, f)), /\n\s+securityContext:\n\s+\{\{- toYaml \.Values\.podSecurityContext \| nindent 8 \}\}/, `${f}: pod securityContext`)
})
