// `npm run build`: edge and core compiled into dist/ as plain JavaScript, what the Helm chart's
// containers run (`node dist/edge/main.js`), as `npm start` runs its own build in its data folder.
// Unlike `npm start`, a type error fails it: an image is not built from code that does not check.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { buildServers } from './lib/build.ts'

const root = fileURLToPath(new URL('..', import.meta.url))
if (!existsSync(join(root, 'node_modules', '.bin', 'tsc'))) {
  console.error('docflow: no TypeScript compiler in node_modules (a devDependency): run `npm ci` before `npm run build`, and `npm prune --omit=dev` after')
  process.exit(1)
}
let typeErrors = false
try {
  const dist = buildServers(root, join(root, 'dist'), (line) => {
    typeErrors = true
    console.error(line)
  })
  if (typeErrors) process.exit(1)
  console.log(`docflow: built edge and core into ${dist}`)
} catch (err) {
  console.error(`docflow: ${(err as Error).message}`)
  process.exit(1)
}
