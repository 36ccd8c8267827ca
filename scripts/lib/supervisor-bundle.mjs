import { renameSync } from 'node:fs'
import { join } from 'node:path'
import { build, stop } from 'esbuild'

/** The bundle's name, beside scripts/start.ts (so its `..` is still the repository). Git-ignored. */
export const SUPERVISOR_BUNDLE = '.supervisor.mjs'

/**
 * npm start's supervisor (scripts/start.ts and what it imports from this repository) as one
 * plain-JavaScript file, which node runs without the tsx loader: for a process that lives as
 * long as the deployment, that loader costs about 30 MB (its own thread and isolate) and an
 * esbuild process (measured: 48 MB of PSS with it, 18 MB without). Packages stay imports. Written
 * under a temporary name and renamed, so stacks starting at once never run half a file. esbuild's
 * service process is stopped after: the caller (npm start's first process) lives on as the parent.
 * @param {string} root the repository
 * @returns {Promise<string>} the bundle's path
 */
export async function bundleSupervisor(root) {
  const out = join(root, 'scripts', SUPERVISOR_BUNDLE)
  const tmp = `${out}.${process.pid}.tmp`
  try {
    await build({ entryPoints: [join(root, 'scripts', 'start.ts')], outfile: tmp, bundle: true, packages: 'external', platform: 'node', format: 'esm', target: 'node20', logLevel: 'error' })
  } finally {
    await stop()
  }
  renameSync(tmp, out)
  return out
}
