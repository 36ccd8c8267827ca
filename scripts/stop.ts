// `npm stop`: asks a running `npm start` to drain and stop, and waits until it has. When its
// supervisor is gone (killed with -9), stops the parts it left running instead.
import { dataDirOf } from './lib/data-dir.mjs'
import { stopLeftovers } from './lib/leftovers.ts'
import { alive } from './lib/proc.ts'
import { runningSupervisor, supervisorPidFile } from './lib/supervisor-pid.mjs'

const dataDir = dataDirOf(process.env)
// Only the process the pid file recorded: a pid another program has taken since is not ours to stop.
const pid = runningSupervisor(supervisorPidFile(dataDir))
if (pid === null) {
  const stopped = stopLeftovers(dataDir)
  console.log(stopped.length > 0 ? `docflow: the supervisor was gone; stopped the parts it left running: ${stopped.join(', ')}` : `docflow: not running (in ${dataDir})`)
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
