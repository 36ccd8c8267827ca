// `npm test`: runs every test file with tap, prints one line per named test and, last, the
// count line CI reads: "N passed, N failed". Exits non-zero on any failure.
import { spawn, spawnSync } from 'node:child_process'
import { Parser, type Result } from 'tap-parser'

const args = process.argv.slice(2)
let passed = 0
let failed = 0
const failures: string[] = []

// The type check counts as a test: a type error is a failure like any other.
const tsc = spawnSync(process.execPath, ['node_modules/.bin/tsc', '-p', '.'], { encoding: 'utf8' })
if (tsc.status === 0) {
  passed++
  process.stdout.write('  ok      typecheck › tsc -p . has no errors\n')
} else {
  failed++
  failures.push(`- typecheck › tsc -p .\n    ${(tsc.stdout + tsc.stderr).trim().split('\n').join('\n    ')}`)
  process.stdout.write('  FAILED  typecheck › tsc -p .\n')
}

const tap = spawn(process.execPath, ['node_modules/.bin/tap', '--reporter=tap', ...(args.length > 0 ? args : ['test/**/*.test.ts'])], {
  stdio: ['ignore', 'pipe', 'inherit'],
})

const failuresInFile = new Map<string, number>()
const root = new Parser()
root.on('child', (file: Parser) => {
  // A file's failures are listed when it completes, with its comments (what the test stack
  // logged before a timeout, test/helpers/setup.ts): a hang then says where it was.
  const comments: string[] = []
  const inFile: string[] = []
  const withLeaves = new Set<string>()
  file.on('comment', (c: string) => {
    if (!/^# (time=|Subtest:)/.test(c)) comments.push(c.trimEnd())
  })
  file.on('child', (test: Parser) =>
    test.on('assert', (leaf: Result) => {
      if (leaf.ok) return
      withLeaves.add(test.name)
      inFile.push(describe(`${file.name} › ${test.name} › ${leaf.name}`, leaf))
    }),
  )
  file.on('assert', (r: Result) => {
    if (r.ok && !r.skip && !r.todo) {
      passed++
      process.stdout.write(`  ok      ${file.name} › ${r.name}\n`)
    } else {
      failed++
      failuresInFile.set(file.name, (failuresInFile.get(file.name) ?? 0) + 1)
      // A failure of the file itself (a timeout outside any test) has no leaves to describe it.
      if (!withLeaves.has(r.name)) inFile.push(describe(`${file.name} › ${r.name}`, r))
      process.stdout.write(`  FAILED  ${file.name} › ${r.name}${r.skip || r.todo ? ' (skipped: a skipped test is a defect)' : ''}\n`)
    }
  })
  file.on('complete', () => {
    if (inFile.length === 0) return
    failures.push(...inFile)
    if (comments.length > 0) failures.push(`  ${file.name} said:\n    ${comments.join('\n    ')}`)
  })
})
// A file that crashed or timed out outside its named tests still counts as a failure.
root.on('assert', (r: Result) => {
  // tap names a timed-out file in the diag of its own "timeout!" line.
  const fileName = typeof r.diag?.expired === 'string' ? r.diag.expired : r.name
  if (r.ok || (failuresInFile.get(fileName) ?? 0) > 0) return
  failed++
  failures.push(describe(`${r.name} (crashed or timed out outside its named tests)`, r))
  process.stdout.write(`  FAILED  ${r.name} (crashed or timed out)\n`)
})
tap.stdout.on('data', (chunk: Buffer) => root.write(chunk))

const code = await new Promise<number>((resolve) => tap.on('exit', (c) => resolve(c ?? 1)))
root.end()
if (failures.length > 0) process.stdout.write(`\nFailures:\n${failures.join('\n')}\n`)
if (code !== 0 && failed === 0) failed = 1 // tap itself failed before reporting a test
process.stdout.write(`\n${passed} passed, ${failed} failed\n`)
process.exit(failed > 0 ? 1 : 0)

function describe(name: string, r: Result): string {
  const diag = r.diag ? JSON.stringify(r.diag, null, 2).split('\n').slice(0, 30).join('\n    ') : ''
  return `- ${name}\n    ${diag}`
}
