// Where `npm start` keeps a stack (pid files, nats, pg, logs, dist), for every script that finds
// it. Plain JavaScript: the bootstrap reads it before node_modules exists.
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * The repository: the nearest folder above this code with a package.json. Not a fixed `../..`:
 * npm start's supervisor runs this code bundled into scripts/.supervisor.mjs, one folder up
 * (there `../..` named the clone's parent, so the stack lived where `npm stop` never looked).
 * @returns {string}
 */
function repository() {
  const here = fileURLToPath(import.meta.url)
  for (let dir = dirname(here); ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir
    if (dirname(dir) === dir) throw new Error(`no package.json above ${here}`)
  }
}

/** <project>/data, the data folder when DOCFLOW_DATA_DIR is unset or empty. */
export const DEFAULT_DATA_DIR = join(repository(), 'data')

/**
 * The data folder: DOCFLOW_DATA_DIR, or DEFAULT_DATA_DIR when it is unset or empty (an empty
 * variable is an unset one, as runtime/config.ts reads every setting; it is never the current folder).
 * @param {NodeJS.ProcessEnv} env
 * @returns {string}
 */
export function dataDirOf(env) {
  return env.DOCFLOW_DATA_DIR || DEFAULT_DATA_DIR
}
