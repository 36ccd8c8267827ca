import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { alive } from './proc.ts'

/**
 * Writes this process's pid to `pidFile` unless a live process already owns it; returns that
 * process's pid then. A pid file left by a killed run is taken over.
 */
export function claimPidFile(pidFile: string): number | null {
  for (;;) {
    try {
      writeFileSync(pidFile, `${process.pid}\n`, { flag: 'wx' })
      return null
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    const pid = Number(readFileSync(pidFile, 'utf8').trim())
    if (pid && pid !== process.pid && alive(pid) && cmdline(pid).includes('scripts/start.ts')) return pid
    rmSync(pidFile, { force: true })
  }
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return ''
    throw err
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
