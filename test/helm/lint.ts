/**
 * Checks of the Helm chart that need no helm binary. Each returns the problems it found (empty
 * when clean), so test/helm/chart.test.ts can run it on the chart and on known-bad input.
 */

/** One `{{ ... }}` action of a Go template, without its delimiters. */
export interface TemplateAction {
  text: string
  line: number
}

export interface LexedTemplate {
  actions: TemplateAction[]
  problems: string[]
}

const lineAt = (src: string, index: number) => src.slice(0, index).split('\n').length

/**
 * Splits a Go template into actions: every `{{` must close with `}}` before the next `{{`,
 * skipping string literals ("...", `...`, '.') and comments inside actions, and no `}}` may
 * stand in the text outside an action.
 */
export function lexTemplate(src: string): LexedTemplate {
  const actions: TemplateAction[] = []
  const problems: string[] = []
  let i = 0
  while (i < src.length) {
    const open = src.indexOf('{{', i)
    const text = src.slice(i, open === -1 ? src.length : open)
    const stray = text.indexOf('}}')
    if (stray !== -1) problems.push(`line ${lineAt(src, i + stray)}: "}}" without an opening "{{"`)
    if (open === -1) break
    let k = open + 2
    let closed = false
    while (k < src.length) {
      if (src.startsWith('/*', k)) {
        const end = src.indexOf('*/', k + 2)
        if (end === -1) {
          problems.push(`line ${lineAt(src, k)}: comment "/*" never closed`)
          k = src.length
          break
        }
        k = end + 2
        continue
      }
      const c = src[k]
      if (c === '"' || c === "'" || c === '`') {
        let j = k + 1
        while (j < src.length && src[j] !== c) {
          if (c !== '`' && src[j] === '\\') j++
          if (c !== '`' && src[j] === '\n') break
          j++
        }
        if (src[j] !== c) {
          problems.push(`line ${lineAt(src, k)}: string literal ${c} never closed`)
          k = src.length
          break
        }
        k = j + 1
        continue
      }
      if (src.startsWith('}}', k)) {
        actions.push({ text: src.slice(open + 2, k), line: lineAt(src, open) })
        closed = true
        k += 2
        break
      }
      if (src.startsWith('{{', k)) problems.push(`line ${lineAt(src, k)}: "{{" inside the action opened on line ${lineAt(src, open)}`)
      k++
    }
    if (!closed && !problems.some((p) => p.includes('never closed'))) problems.push(`line ${lineAt(src, open)}: "{{" never closed`)
    i = k
  }
  return { actions, problems }
}

const BLOCK_OPENERS = new Set(['if', 'range', 'with', 'define', 'block'])

/** The action's words without trim markers (`{{-`, `-}}`), or null for a comment. */
function actionBody(a: TemplateAction): string | null {
  const body = a.text.replace(/^-\s/, '').replace(/\s-$/, '').trim()
  return body.startsWith('/*') ? null : body
}

/** Every if/range/with/define/block has its `end`, and no `end` or `else` stands alone. */
export function blockProblems(actions: TemplateAction[]): string[] {
  const problems: string[] = []
  const stack: { keyword: string; line: number; what: string }[] = []
  for (const a of actions) {
    const body = actionBody(a)
    if (body === null) continue
    const keyword = /^[a-z]+/.exec(body)?.[0] ?? ''
    if (BLOCK_OPENERS.has(keyword)) stack.push({ keyword, line: a.line, what: body.slice(0, 60) })
    else if (keyword === 'else' && stack.length === 0) problems.push(`line ${a.line}: "else" outside any block`)
    else if (keyword === 'end' && !stack.pop()) problems.push(`line ${a.line}: "end" without a block to close`)
  }
  for (const open of stack) problems.push(`line ${open.line}: "${open.what}" has no matching end`)
  return problems
}

/** Names of the templates `define`d. */
export function definedTemplates(actions: TemplateAction[]): string[] {
  return actions.flatMap((a) => {
    const m = /^define\s+"([^"]+)"/.exec(actionBody(a) ?? '')
    return m ? [m[1]!] : []
  })
}

/** Names of the templates used with include/template. */
export function usedTemplates(actions: TemplateAction[]): string[] {
  return actions.flatMap((a) => [...a.text.matchAll(/\b(?:include|template)\s+"([^"]+)"/g)].map((m) => m[1]!))
}

const BUILTIN_OBJECTS = new Set(['Values', 'Release', 'Chart', 'Template', 'Capabilities', 'Files', 'Subcharts'])
const stripStrings = (s: string) => s.replace(/"(?:[^"\\]|\\.)*"|`[^`]*`|'(?:[^'\\]|\\.)*'/g, ' ')

/**
 * Values paths the actions read, as ['a', 'b', 'c']: `.Values.a.b.c` (also `$.Values...`,
 * `.ctx.Values...`), and `.c` inside `{{ with .Values.a.b }}` (nested `with`s too).
 */
export function valuesPaths(actions: TemplateAction[]): { path: string[]; line: number }[] {
  const out: { path: string[]; line: number }[] = []
  // The values path `.` stands for in each open block; null when unknown (range, define).
  const scopes: (string[] | null)[] = []
  for (const a of actions) {
    const body = actionBody(a)
    if (body === null) continue
    const code = stripStrings(body)
    const keyword = /^[a-z]+/.exec(code)?.[0] ?? ''
    const scope = scopes.length > 0 ? scopes[scopes.length - 1]! : null
    for (const m of code.matchAll(/\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)) out.push({ path: m[1]!.slice(1).split('.'), line: a.line })
    const relative = [...code.matchAll(/(?<![\w$).])\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)/g)]
      .map((m) => m[1]!.split('.'))
      .filter((p) => !BUILTIN_OBJECTS.has(p[0]!))
    if (scope) for (const p of relative) out.push({ path: [...scope, ...p], line: a.line })
    if (keyword === 'end') scopes.pop()
    else if (keyword === 'with') {
      const arg = /^with\s+(\S+)/.exec(code)?.[1] ?? ''
      const abs = /^\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)$/.exec(arg)
      const rel = /^\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)$/.exec(arg)
      scopes.push(abs ? abs[1]!.slice(1).split('.') : rel && scope ? [...scope, ...rel[1]!.split('.')] : null)
    } else if (keyword === 'range' || keyword === 'define' || keyword === 'block') scopes.push(null)
    else if (keyword === 'if') scopes.push(scope)
  }
  return out
}

/** Paths that do not exist in `values` (a key set to null, false or {} exists). */
export function missingValuesPaths(paths: { path: string[]; line: number }[], values: unknown): string[] {
  const problems: string[] = []
  for (const { path, line } of paths) {
    let node: unknown = values
    for (const [i, key] of path.entries()) {
      if (node === null || typeof node !== 'object' || !Object.hasOwn(node, key)) {
        problems.push(`line ${line}: .Values.${path.join('.')} is not in values.yaml (no "${path.slice(0, i + 1).join('.')}")`)
        break
      }
      node = (node as Record<string, unknown>)[key]
    }
  }
  return problems
}

/** Variable names of a process's `loadConfigOrExit(Config, { key: 'ENV_NAME', ... })` map. */
export function configEnvNames(mainSrc: string): string[] {
  const map = /loadConfigOrExit\(\s*\w+\s*,\s*\{([\s\S]*?)\}\s*\)/.exec(mainSrc)
  if (!map) return []
  return [...map[1]!.matchAll(/\b\w+\s*:\s*['"]([A-Z][A-Z0-9_]*)['"]/g)].map((m) => m[1]!)
}

/** Variables read as `process.env.NAME` or `process.env['NAME']`. */
export function processEnvNames(src: string): string[] {
  return [...src.matchAll(/process\.env(?:\.([A-Z][A-Z0-9_]*)|\[\s*['"]([A-Z][A-Z0-9_]*)['"]\s*\])/g)].map((m) => (m[1] ?? m[2])!)
}

/** Env var names a manifest template sets literally (`- name: UPPER_CASE` list entries). */
export function templateEnvNames(src: string): string[] {
  return [...src.matchAll(/^\s*-\s*name:\s*["']?([A-Z][A-Z0-9_]*)["']?\s*$/gm)].map((m) => m[1]!)
}

export function unknownNames(names: Iterable<string>, allowed: ReadonlySet<string>, what: string): string[] {
  return [...new Set(names)].filter((n) => !allowed.has(n)).map((n) => `${what} ${n} is not read by the code`)
}

export type MetricType = 'Counter' | 'Gauge' | 'Histogram' | 'Summary'

/** `new Counter({ name: 'docflow_...' ... })` and friends, by name. */
export function codeMetrics(src: string): Map<string, MetricType> {
  const out = new Map<string, MetricType>()
  for (const m of src.matchAll(/new\s+(Counter|Gauge|Histogram|Summary)\s*\(\s*\{\s*name:\s*['"](docflow_[a-z0-9_]+)['"]/g)) out.set(m[2]!, m[1] as MetricType)
  return out
}

const PROMQL_KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'inf', 'nan', 'atan2'])

/** Metric names a PromQL expression selects (functions, keywords, labels and durations removed). */
export function promqlMetricNames(expr: string): string[] {
  const s = expr
    .replace(/\{\{[\s\S]*?\}\}/g, ' 0 ') // Helm actions (thresholds from values)
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
  const names: string[] = []
  for (const m of s.matchAll(/(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const rest = s.slice(m.index + m[0].length)
    if (/^\s*\(/.test(rest) || PROMQL_KEYWORDS.has(m[0].toLowerCase())) continue
    names.push(m[0])
  }
  return names
}

/** Names neither in the code nor a histogram's _bucket/_sum/_count series. */
export function unknownMetrics(names: string[], known: ReadonlyMap<string, MetricType>): string[] {
  return [...new Set(names)].filter((name) => {
    if (known.has(name)) return false
    const base = /^(.*)_(bucket|sum|count)$/.exec(name)
    const type = base ? known.get(base[1]!) : undefined
    return !(type === 'Histogram' || (type === 'Summary' && base?.[2] !== 'bucket'))
  })
}

/** `expr:` values of a rules file (one-line or `|`/`>` blocks), with the line they start on. */
export function alertExpressions(src: string): { expr: string; line: number }[] {
  const lines = src.split('\n')
  const out: { expr: string; line: number }[] = []
  for (const [i, line] of lines.entries()) {
    const m = /^(\s*)expr:\s*(.*)$/.exec(line)
    if (!m) continue
    const indent = m[1]!.length
    const value = m[2]!.trim()
    if (/^[|>][-+]?$/.test(value)) {
      const body: string[] = []
      for (let j = i + 1; j < lines.length; j++) {
        const next = lines[j]!
        if (next.trim() !== '' && next.length - next.trimStart().length <= indent) break
        body.push(next.trim())
      }
      out.push({ expr: body.join(' ').trim(), line: i + 1 })
    } else {
      out.push({ expr: value.replace(/^(['"])(.*)\1$/, '$2'), line: i + 1 })
    }
  }
  return out
}

/** Compares dotted versions (2.12.11 vs 2.12.8); a leading "v" and a "-suffix" are ignored. */
export function versionAtLeast(version: string, min: string): boolean {
  const parts = (v: string) => v.replace(/^v/, '').split('-')[0]!.split('.').map(Number)
  const a = parts(version)
  const b = parts(min)
  if (a.some(Number.isNaN)) return false
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0)
    if (d !== 0) return d > 0
  }
  return true
}

const get = (o: unknown, path: string): unknown =>
  path.split('.').reduce<unknown>((node, key) => (node !== null && typeof node === 'object' ? (node as Record<string, unknown>)[key] : undefined), o)

/** What production NATS must be (helm/README.md): 3-node JetStream cluster on PVCs, fsync always, operator mode with the full resolver, nats-server >= 2.12.8. */
export function natsValuesProblems(values: unknown): string[] {
  const want: [string, (v: unknown) => boolean, string][] = [
    ['nats.enabled', (v) => v === true, 'true'],
    ['nats.config.cluster.enabled', (v) => v === true, 'true'],
    ['nats.config.cluster.replicas', (v) => v === 3, '3'],
    ['nats.config.jetstream.enabled', (v) => v === true, 'true'],
    ['nats.config.jetstream.fileStore.enabled', (v) => v === true, 'true'],
    ['nats.config.jetstream.fileStore.pvc.enabled', (v) => v === true, 'true'],
    ['nats.config.jetstream.memoryStore.enabled', (v) => v !== true, 'not true'],
    ['nats.config.jetstream.merge.sync_interval', (v) => v === 'always', '"always"'],
    ['nats.config.resolver.enabled', (v) => v === true, 'true'],
    ['nats.config.resolver.merge.type', (v) => v === 'full', '"full"'],
    ['nats.config.resolver.pvc.enabled', (v) => v === true, 'true'],
    ['nats.config.merge', (v) => v !== null && typeof v === 'object' && Object.keys(v).some((k) => k === 'operator' || k.endsWith('$include')), 'an operator or $include (operator JWT) entry'],
    ['nats.container.image.tag', (v) => typeof v === 'string' && versionAtLeast(v, '2.12.8'), 'nats-server >= 2.12.8'],
    // Unset, max_file_store is the whole volume: the filesystem fills before JetStream's limit acts.
    ['nats.config.jetstream.fileStore.maxSize', (v) => quantityBytes(v) > 0 && quantityBytes(v) <= 0.95 * quantityBytes(get(values, 'nats.config.jetstream.fileStore.pvc.size')), 'at most 95% of fileStore.pvc.size'],
  ]
  return want.filter(([path, ok]) => !ok(get(values, path))).map(([path, , what]) => `${path} is ${JSON.stringify(get(values, path))}, want ${what}`)
}

/** Bytes of a Kubernetes quantity with a binary suffix ("900Gi", "1Ti"); NaN for anything else. */
function quantityBytes(q: unknown): number {
  const m = typeof q === 'string' ? /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti)$/.exec(q) : null
  return m ? Number(m[1]) * 1024 ** (['Ki', 'Mi', 'Gi', 'Ti'].indexOf(m[2]!) + 1) : NaN
}

/** The nats dependency in Chart.yaml: official repo, a chart version >= 2.12.8, switchable. */
export function natsDependencyProblems(chart: unknown): string[] {
  const deps = get(chart, 'dependencies')
  const nats = Array.isArray(deps) ? (deps as Record<string, unknown>[]).find((d) => d.name === 'nats') : undefined
  if (!nats) return ['Chart.yaml has no dependency named nats']
  const problems: string[] = []
  if (nats.repository !== 'https://nats-io.github.io/k8s/helm/charts/') problems.push(`nats repository is ${String(nats.repository)}`)
  if (typeof nats.version !== 'string' || !versionAtLeast(nats.version, '2.12.8')) problems.push(`nats chart version ${String(nats.version)} is older than 2.12.8`)
  if (nats.condition !== 'nats.enabled') problems.push('nats dependency has no condition nats.enabled')
  return problems
}
