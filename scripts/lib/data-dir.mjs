// Where `npm start` keeps a stack (pid files, nats, pg, logs, dist), for every script that finds
// it. Plain JavaScript: the bootstrap reads it before node_modules exists.
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** <project>/data, the data folder when DOCFLOW_DATA_DIR is unset or empty. */
export const DEFAULT_DATA_DIR = join(fileURLToPath(new URL('../..', import.meta.url)), 'data')

/**
 * The data folder: DOCFLOW_DATA_DIR, or DEFAULT_DATA_DIR when it is unset or empty (an empty
 * variable is an unset one, as runtime/config.ts reads every setting; it is never the current folder).
 * @param {NodeJS.ProcessEnv} env
 * @returns {string}
 */
export function dataDirOf(env) {
  return env.DOCFLOW_DATA_DIR || DEFAULT_DATA_DIR
}
