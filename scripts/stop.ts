// `npm stop`: asks a running `npm start` to drain and stop, and waits until it has.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { alive } from './lib/proc.ts'

const dataDir = process.env.DOCFLOW_DATA_DIR ?? join(fileURLToPath(new URL('..', import.meta.url)), 'data')
let pid: number
try {
  pid = Number(readFileSync(join(dataDir, 'docflow.pid'), 'utf8').trim())
} catch {
  console.log('docflow: not running')
  process.exit(0)
}
if (!pid || !alive(pid)) {
  console.log('docflow: not running')
  process.exit(0)
}
process.kill(pid, 'SIGTERM')
process.stdout.write(`docflow: stopping (pid ${pid})`)
const deadline = Date.now() + 60_000
while (alive(pid)) {
  if (Date.now() > deadline) {
    console.error(`\ndocflow: pid ${pid} still running after 60 s`)
    process.exit(1)
  }
  await new Promise((r) => setTimeout(r, 250))
  process.stdout.write('.')
}
console.log(' stopped')
