import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { natsFiles } from './nats-server.ts'
import { postmasterPidFile } from './postgres.ts'
import { stopStale } from './proc.ts'

interface Leftover {
  name: string
  pidFile: string
  /** What the process's command line holds (stopStale leaves any other process alone). */
  program: string
  /** The signal that stops it cleanly. */
  signal: NodeJS.Signals
}

/**
 * Stops what a supervisor killed with -9 left running in `dataDir` (each part runs in its own
 * process group, so it outlives the supervisor), in the order a drain stops them: edges, cores,
 * PostgreSQL, nats-server. Each is found by its pid file and stopped only while that pid is still
 * the part (stopStale: its command line and start time), never a process that took the pid over.
 * Returns the names of the parts it stopped.
 */
export function stopLeftovers(dataDir: string): string[] {
  const runDir = join(dataDir, 'run')
  const recorded = existsSync(runDir) ? readdirSync(runDir).filter((f) => f.endsWith('.pid')).map((f) => f.slice(0, -'.pid'.length)).sort() : []
  const servers = (['edge', 'core'] as const).flatMap((kind) =>
    recorded.filter((name) => name === kind || name.startsWith(`${kind}-`)).map((name): Leftover => ({ name, pidFile: join(runDir, `${name}.pid`), program: `${kind}/main.`, signal: 'SIGTERM' })),
  )
  const leftovers: Leftover[] = [
    ...servers,
    // By the pid files PostgreSQL and nats-server write themselves: run/ gets a restarted one's pid only once it is healthy.
    { name: 'postgres', pidFile: postmasterPidFile(join(dataDir, 'pg')), program: 'postgres', signal: 'SIGINT' },
    { name: 'nats-server', pidFile: natsFiles(join(dataDir, 'nats')).pid, program: 'nats-server', signal: 'SIGTERM' },
  ]
  return leftovers.filter((part) => stopStale(part.pidFile, part.program, part.signal)).map((part) => part.name)
}
