// Where the servers DocFlow runs on one machine live. Plain JavaScript: the bootstrap uses it
// before node_modules exists.
import { accessSync, constants, readdirSync, realpathSync } from 'node:fs'
import { dirname } from 'node:path'

/** @param {string} path */
function executable(path) {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

/**
 * Full path of a program on PATH or in one of `extraDirs`, or null.
 * @param {string} program
 * @param {string[]} [extraDirs]
 * @returns {string | null}
 */
export function which(program, extraDirs = []) {
  for (const dir of [...(process.env.PATH ?? '').split(':'), ...extraDirs]) {
    if (dir && executable(`${dir}/${program}`)) return `${dir}/${program}`
  }
  return null
}

/** Debian keeps PostgreSQL's server programs off PATH, under /usr/lib/postgresql/<major>/bin. */
function postgresDirs() {
  try {
    return readdirSync('/usr/lib/postgresql')
      .filter((v) => /^\d+$/.test(v))
      .sort((a, b) => Number(b) - Number(a))
      .map((v) => `/usr/lib/postgresql/${v}/bin`)
  } catch {
    return []
  }
}

/** Directory holding initdb and postgres, or null when PostgreSQL's server is not installed. */
export function postgresBinDir() {
  const initdb = which('initdb', postgresDirs())
  if (!initdb) return null
  const dir = dirname(realpathSync(initdb))
  return executable(`${dir}/postgres`) ? dir : null
}

/** Path of nats-server, or null. */
export function natsServerBin() {
  return which('nats-server', ['/usr/sbin', '/usr/local/sbin'])
}
