import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/**
 * Compiles edge and core into `outDir` (tsconfig.build.json) and returns it: the
 * server processes `npm start` runs are plain JavaScript, without the tsx loader, its worker
 * thread and its esbuild process (about 40 MB of PSS per process, measured). Built at every
 * start, so dist/ never lags the sources; a type error is reported but does not stop the start
 * (tsc still emits), as running the sources with tsx would not either. Each stack builds into
 * its own data folder, so two stacks starting at once never share half-written files.
 */
export function buildServers(root: string, outDir: string, say: (line: string) => void): string {
  const dist = outDir
  rmSync(dist, { recursive: true, force: true })
  mkdirSync(dist, { recursive: true })
  // Plain ESM like the project, resolving packages from the project's node_modules.
  writeFileSync(join(dist, 'package.json'), '{ "type": "module" }\n')
  symlinkSync(join(root, 'node_modules'), join(dist, 'node_modules'))
  try {
    // env -u: loaders a test runner put in NODE_OPTIONS (tap's process info) must not wrap tsc.
    execFileSync('env', ['-u', 'NODE_OPTIONS', join(root, 'node_modules', '.bin', 'tsc'), '-p', join(root, 'tsconfig.build.json'), '--outDir', dist], { cwd: root, stdio: 'pipe' })
  } catch (err) {
    const out = String((err as { stdout?: Buffer }).stdout ?? '').trim()
    if (!existsSync(join(dist, 'edge', 'main.js')) || !existsSync(join(dist, 'core', 'main.js'))) throw new Error(`build failed: ${out || (err as Error).message}`, { cause: err })
    say(`type errors (the build still ran):\n${out}`)
  }
  cpSync(join(root, 'core', 'migrations'), join(dist, 'core', 'migrations'), { recursive: true })
  return dist
}
