import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { alive, exited, readStat, stopStale, waitFor } from '../../scripts/lib/proc.ts'

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

t.test('scripts - alive is false for a zombie (a part orphaned by a killed supervisor waits for init to reap it)', async (t) => {
  // The shell starts a child that exits a moment later, once the shell has become a `sleep` that
  // never reaps it (a child that exited before the exec could be reaped by the shell: CI saw it).
  const parent = spawn('sh', ['-c', 'sleep 1 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] })
  t.teardown(() => parent.kill('SIGKILL'))
  const zombie = Number(await new Promise<string>((resolve) => parent.stdout.once('data', (b: Buffer) => resolve(b.toString()))))
  await waitFor('the child to exit', async () => readStat(zombie)?.state === 'Z', 5_000)
  t.notOk(alive(zombie), `pid ${zombie} is a zombie`)
  t.ok(alive(parent.pid!), 'its parent runs')
})
