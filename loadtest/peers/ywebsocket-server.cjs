// @ts-nocheck
// The y-websocket 1.x reference server (its own bin/server.js, LevelDB persistence when
// YPERSISTENCE is set: every update is written with y-leveldb's storeUpdate), started unchanged
// except for one wrapper: y-leveldb's storeUpdate notes when each write resolved (one clock read
// and one array push per update), so the benchmark can tell when an edit was on disk.
// The parent asks over IPC: { t: 'stored', docs: [...] } → { t: 'stored', stored: [[doc, wallMs, base64 update], ...] }.
const path = require('node:path')
const { createRequire } = require('node:module')

const ref = path.join(__dirname, '..', '..', 'node_modules', 'y-websocket-reference')
const refRequire = createRequire(path.join(ref, 'bin', 'utils.js'))
const { LeveldbPersistence } = refRequire('y-leveldb')

/** [docName, ms since the epoch when the write resolved, update]. */
const stored = []
const storeUpdate = LeveldbPersistence.prototype.storeUpdate
LeveldbPersistence.prototype.storeUpdate = function (docName, update) {
  const written = storeUpdate.call(this, docName, update)
  written.then(
    () => stored.push([docName, performance.timeOrigin + performance.now(), update]),
    (err) => console.error(`storeUpdate ${docName} failed: ${err && err.message}`),
  )
  return written
}

process.on('message', (m) => {
  if (!m || m.t !== 'stored') return
  const docs = new Set(m.docs)
  const out = stored.filter((s) => docs.has(s[0])).map(([d, t, u]) => [d, t, Buffer.from(u).toString('base64')])
  process.send({ t: 'stored', stored: out })
})
process.on('disconnect', () => process.exit(0))

require(path.join(ref, 'bin', 'server.js'))
