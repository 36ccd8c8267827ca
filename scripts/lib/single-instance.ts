import { rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { runningSupervisor, supervisorRecord } from './supervisor-pid.mjs'

/**
 * Records this process as the supervisor in `pidFile` unless the supervisor the file names
 * still runs; returns that process's pid then. A file left by a killed run, or naming a pid
 * another process has taken since, is taken over.
 */
export function claimPidFile(pidFile: string): number | null {
  for (;;) {
    try {
      writeFileSync(pidFile, supervisorRecord(), { flag: 'wx' })
      return null
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    const pid = runningSupervisor(pidFile)
    if (pid !== null && pid !== process.pid) return pid
    rmSync(pidFile, { force: true })
  }
}

/** True when nothing listens on `port` on any local address. */
export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer()
    srv.once('error', () => resolve(false))
    srv.listen(port, () => srv.close(() => resolve(true)))
  })
}
