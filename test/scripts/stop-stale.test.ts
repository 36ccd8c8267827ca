import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { alive, exited, stopStale } from '../../scripts/lib/proc.ts'

const dir = mkdtempSync(join(tmpdir(), 'docflow-stale-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

/** A process whose command line carries `marker`, as a leftover server's would. */
function leftover(marker: string) {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)', marker], { stdio: 'ignore' })
  t.teardown(() => child.kill('SIGKILL'))
  return child
}

t.test('scripts - stopStale stops the process its pid file names', async (t) => {
  const child = leftover('stale-owner-marker')
  await new Promise((r) => child.once('spawn', r))
  const pidFile = join(dir, 'owner.pid')
  writeFileSync(pidFile, `${child.pid}\n`) // written after the process started, as a server writes it
  stopStale(pidFile, 'stale-owner-marker', 'SIGTERM', 5_000)
  await exited(child)
  t.notOk(alive(child.pid!), 'stopped')
})

t.test('scripts - stopStale leaves alone a process that started after its pid file was written (a recycled pid)', async (t) => {
  const child = leftover('stale-recycled-marker')
  await new Promise((r) => child.once('spawn', r))
  const pidFile = join(dir, 'recycled.pid')
  writeFileSync(pidFile, `${child.pid}\n`)
  const writtenAt = new Date(Date.now() - 60_000) // the file of a server that died a minute ago
  utimesSync(pidFile, writtenAt, writtenAt)
  stopStale(pidFile, 'stale-recycled-marker', 'SIGTERM', 5_000)
  await new Promise((r) => setTimeout(r, 300))
  t.ok(alive(child.pid!) && child.exitCode === null && child.signalCode === null, 'still running')
})
