#!/usr/bin/env node
// The `docflow` bin: runs scripts/docflow.ts (TypeScript, through tsx) with the same arguments
// and exit status. Plain JavaScript so the bin works without a build step.
import { spawn } from 'node:child_process'
import { constants } from 'node:os'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./docflow.ts', import.meta.url)), ...process.argv.slice(2)], { cwd: ROOT, stdio: 'inherit' })
for (const signal of /** @type {const} */ (['SIGINT', 'SIGTERM'])) process.on(signal, () => child.kill(signal))
child.on('exit', (code, signal) => process.exit(code ?? 128 + (signal ? constants.signals[signal] : 1)))
