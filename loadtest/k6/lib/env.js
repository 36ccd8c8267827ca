// @ts-nocheck -- k6 JavaScript (goja): k6 modules and globals (__ENV, __VU, open), not type-checked here
// Shared k6 settings from the environment (k6 run -e NAME=value or exported variables).
//   WS_URL       the edge's public WebSocket URL, e.g. wss://edit.example.com (room = doc id)
//   TOKENS_FILE  a file with one DocFlow JWT per line (VU n uses line (n-1) mod count), or
//   TOKEN        one token for every VU
// open() only works in k6's init context: call tokensFromEnv() at the top level of a script.

/** The tokens the script may use; throws with what to set when there are none. */
export function tokensFromEnv(env, openFile) {
  if (env.TOKENS_FILE) {
    const tokens = openFile(env.TOKENS_FILE)
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.length > 0)
    if (tokens.length === 0) throw new Error(`TOKENS_FILE ${env.TOKENS_FILE} holds no token`)
    return tokens
  }
  if (env.TOKEN) return [env.TOKEN]
  throw new Error('set TOKENS_FILE (one DocFlow JWT per line; see loadtest/README.md) or TOKEN')
}

/** ws URL of `docId` for a client holding `token` (what y-websocket's provider opens). */
export function roomUrl(base, docId, token) {
  return `${base.replace(/\/+$/, '')}/${encodeURIComponent(docId)}?token=${encodeURIComponent(token)}`
}

/** An integer env setting with its default, or an error saying which one is wrong. */
export function intEnv(env, name, fallback) {
  const raw = env[name]
  if (raw === undefined || raw === '') return fallback
  if (!/^\d+$/.test(raw)) throw new Error(`${name}=${raw} is not a whole number`)
  return Number(raw)
}
