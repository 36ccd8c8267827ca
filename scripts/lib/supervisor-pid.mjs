// npm start's pid file, <data dir>/docflow.pid: which process supervises the stack of a data
// folder. Plain JavaScript: the bootstrap refuses a second start with it before it installs or
// builds anything.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

/** @param {string} dataDir */
export function supervisorPidFile(dataDir) {
  return join(dataDir, 'docflow.pid')
}

/**
 * The pid file's content for this process: its pid, then its identity (start time and command
 * line). A pid alone names whichever process got the number next (pids are recycled), and a
 * command line pattern misses the supervisor once it runs another way (scripts/start.ts under
 * tsx, or bundled as scripts/.supervisor.mjs): the recorded identity is this one process, however
 * it was started.
 * @returns {string}
 */
export function supervisorRecord() {
  return `${process.pid}\n${identity(process.pid)}\n`
}

/**
 * The pid `pidFile` names while that very process still runs, else null (no file, a dead pid,
 * or a pid another process took over since).
 * @param {string} pidFile
 * @returns {number | null}
 */
export function runningSupervisor(pidFile) {
  let lines
  try {
    lines = readFileSync(pidFile, 'utf8').split('\n')
  } catch (err) {
    if (/** @type {NodeJS.ErrnoException} */ (err).code === 'ENOENT') return null
    throw err
  }
  const pid = Number(lines[0])
  return pid > 0 && lines[1] && identity(pid) === lines[1] ? pid : null
}

/**
 * The one line npm start refuses a second start with.
 * @param {number} pid @param {string} dataDir
 */
export function alreadyRunning(pid, dataDir) {
  return `already running in ${dataDir} (pid ${pid}); stop it with \`npm stop\` or Ctrl-C in its terminal`
}

/**
 * `<start time in clock ticks after boot> <command line as JSON>` of a live process, or null once
 * it is gone (a zombie has an empty command line, so it never matches a recorded one).
 * @param {number} pid
 * @returns {string | null}
 */
function identity(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) may hold spaces and parentheses: field n >= 3 is the (n - 3)th after the last ')'.
    const startTicks = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1)
    return `${startTicks} ${JSON.stringify(argv)}`
  } catch (err) {
    // ESRCH: the process exited between opening and reading its files.
    if (['ENOENT', 'ESRCH'].includes(/** @type {NodeJS.ErrnoException} */ (err).code ?? '')) return null
    throw err
  }
}
