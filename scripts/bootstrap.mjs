#!/usr/bin/env node
// First step of `npm start` / `npm test` / `npm run bench` on any machine: installs what is missing (npm
// packages, nats-server, PostgreSQL), then hands over to the TypeScript entry point.
// Plain JavaScript with no dependencies, because node_modules may not exist yet.
import { execFileSync, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { constants } from 'node:os'
import { fileURLToPath } from 'node:url'
import { natsServerBin, postgresBinDir } from './lib/binaries.mjs'
import { dataDirOf } from './lib/data-dir.mjs'
import { alreadyRunning, runningSupervisor, supervisorPidFile } from './lib/supervisor-pid.mjs'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const STAMP = `${ROOT}node_modules/.docflow-installed`
/** @type {Record<string, string>} */
const ENTRY = { start: 'scripts/start.ts', test: 'scripts/test.ts', bench: 'loadtest/bench.ts' }

const mode = process.argv[2] ?? ''
const entry = ENTRY[mode]
if (!entry) fail(`usage: node scripts/bootstrap.mjs ${Object.keys(ENTRY).join('|')} [args...]`)
if (Number(process.versions.node.split('.')[0]) < 20) fail(`Node.js 20 or newer is needed (this is ${process.version})`)

if (mode === 'start') refuseSecondStart()
ensureNpmPackages()
ensureSystemPackages()

// The supervisor runs as plain JavaScript (scripts/lib/supervisor-bundle.mjs: imported once esbuild
// is installed); the test runner and the benchmark with tsx.
const program = mode === 'start' ? [await (await import('./lib/supervisor-bundle.mjs')).bundleSupervisor(ROOT)] : ['--import', 'tsx', entry]
const child = spawn(process.execPath, [...program, ...process.argv.slice(3)], { cwd: ROOT, stdio: 'inherit' })
// The entry point handles SIGINT/SIGTERM itself; forward them instead of dying first.
for (const signal of /** @type {const} */ (['SIGINT', 'SIGTERM'])) process.on(signal, () => child.kill(signal))
child.on('exit', (code, signal) => process.exit(code ?? 128 + (signal ? constants.signals[signal] : 1)))

/**
 * Exits when a stack runs in the data folder already, before anything is installed or built: npm
 * ci would replace node_modules under it. The supervisor checks again as it claims the folder.
 */
function refuseSecondStart() {
  const dataDir = dataDirOf(process.env)
  const pid = runningSupervisor(supervisorPidFile(dataDir))
  if (pid !== null) fail(alreadyRunning(pid, dataDir))
}

/** npm ci when node_modules is missing or was installed from another lockfile / tap config. */
function ensureNpmPackages() {
  const pkg = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8'))
  const want = createHash('sha256').update(readFileSync(`${ROOT}package-lock.json`)).update(JSON.stringify(pkg.tap ?? {})).digest('hex')
  if (existsSync(STAMP) && readFileSync(STAMP, 'utf8') === want) return
  say('installing npm packages (npm ci)')
  run('npm', ['ci', '--no-audit', '--no-fund'])
  // tap compiles its plugin set (we swap its TypeScript loader for tsx) into node_modules.
  say('building the test runner (tap build)')
  run(`${ROOT}node_modules/.bin/tap`, ['build'])
  writeFileSync(STAMP, want)
}

/** nats-server and PostgreSQL from Debian's packages when their programs are missing. */
function ensureSystemPackages() {
  const missing = []
  if (!natsServerBin()) missing.push('nats-server')
  const needPostgres = mode !== 'start' || !process.env.DATABASE_URL
  if (needPostgres && !postgresBinDir()) missing.push('postgresql')
  if (missing.length === 0) return
  if (process.getuid?.() !== 0) {
    fail(`DocFlow needs ${missing.join(' and ')} and cannot install them without root.\n` + `Run:  sudo apt-get install -y ${missing.join(' ')}   (then run this command again)`)
  }
  say(`installing ${missing.join(', ')} (apt-get)`)
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  try {
    run('apt-get', ['install', '-y', '--no-install-recommends', ...missing], env)
  } catch {
    // A fresh machine may have no package lists yet.
    run('apt-get', ['update'], env)
    run('apt-get', ['install', '-y', '--no-install-recommends', ...missing], env)
  }
  if (!natsServerBin() || (needPostgres && !postgresBinDir())) fail(`installed ${missing.join(', ')} but cannot find their programs`)
}

/** @param {string} cmd @param {string[]} args @param {NodeJS.ProcessEnv} [env] */
function run(cmd, args, env = process.env) {
  execFileSync(cmd, args, { cwd: ROOT, stdio: 'inherit', env })
}

/** @param {string} msg */
function say(msg) {
  process.stdout.write(`docflow: ${msg}\n`)
}

/** @param {string} msg @returns {never} */
function fail(msg) {
  process.stderr.write(`docflow: ${msg}\n`)
  process.exit(1)
}
