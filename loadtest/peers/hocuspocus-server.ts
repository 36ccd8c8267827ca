// Hocuspocus as its docs set it up: @hocuspocus/server with the Database extension storing each
// document's whole state in PostgreSQL (table documents(name, data)) on its default debounce
// (2 s, at most 10 s). One addition for the benchmark: after each store it notes when and which
// state vector was stored, so the parent can tell when an edit was durable.
// Env: HOCUSPOCUS_PORT, DATABASE_URL. IPC: { t: 'stored', docs } → { t: 'stored', stored: [[doc, wallMs, base64 state vector], ...] }.
import { Server } from '@hocuspocus/server'
import { Database } from '@hocuspocus/extension-database'
import pg from 'pg'
import * as Y from 'yjs'

const port = Number(process.env.HOCUSPOCUS_PORT)
const databaseUrl = process.env.DATABASE_URL
if (!port || !databaseUrl) throw new Error('HOCUSPOCUS_PORT and DATABASE_URL are required')

const pool = new pg.Pool({ connectionString: databaseUrl, max: 10 })
await pool.query('CREATE TABLE IF NOT EXISTS documents (name text PRIMARY KEY, data bytea NOT NULL)')

/** [doc, ms since the epoch when the store committed, state vector of the stored state]. */
const stored: [string, number, Uint8Array][] = []

const server = new Server({
  port,
  address: '127.0.0.1',
  quiet: true,
  extensions: [
    new Database({
      fetch: async ({ documentName }) => {
        const r = await pool.query<{ data: Buffer }>('SELECT data FROM documents WHERE name = $1', [documentName])
        return r.rows[0]?.data ?? null
      },
      store: async ({ documentName, state }) => {
        await pool.query('INSERT INTO documents (name, data) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET data = EXCLUDED.data', [documentName, state])
        stored.push([documentName, performance.timeOrigin + performance.now(), Y.encodeStateVectorFromUpdate(state)])
      },
    }),
  ],
})

process.on('message', (m: { t?: string; docs?: string[] }) => {
  if (m?.t !== 'stored') return
  const docs = new Set(m.docs)
  process.send?.({ t: 'stored', stored: stored.filter((s) => docs.has(s[0])).map(([d, t, sv]) => [d, t, Buffer.from(sv).toString('base64')]) })
})
process.on('disconnect', () => process.exit(0))

await server.listen()
console.log(`hocuspocus listening on 127.0.0.1:${port}`)
