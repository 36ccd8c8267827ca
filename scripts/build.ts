// `npm run build`: edge and core compiled into dist/ as plain JavaScript, what the Helm chart's
// containers run (`node dist/edge/main.js`), as `npm start` runs its own build in its data folder.
// Unlike `npm start`, a type error fails it: an image is not built from code that does not check.
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { buildServers } from './lib/build.ts'

const root = fileURLToPath(new URL('..', import.meta.url))
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
