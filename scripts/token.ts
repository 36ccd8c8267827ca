// `npm run token -- --tenant acme [--user alice] [--docs 'team-a/*,spec'] [--role viewer] [--ttl 8h] [--id <jti>]`
// Mints a DocFlow JWT signed with DOCFLOW_JWT_SECRET (the dev default when unset), with
// DOCFLOW_JWT_ISSUER / DOCFLOW_JWT_AUDIENCE as iss / aud when set.
import { parseArgs } from 'node:util'
import { z } from 'zod'
import { Claims, REVOCATION_TTL_MS } from '../contracts/mod.ts'
import { JwtSecret } from '../runtime/config.ts'
import { mintToken } from '../runtime/jwt.ts'

const USAGE = `usage: npm run token -- --tenant <tenant> [--user <sub>] [--docs <pattern,...>] [--role editor|viewer] [--ttl <n>s|m|h|d] [--id <token id, for npm run tenant -- revoke --token>]`

const Ttl = z
  .string()
  .regex(/^\d+[smhd]$/, 'ttl: a number with s, m, h or d (e.g. 30m, 8h)')
  .transform((v) => Number(v.slice(0, -1)) * { s: 1, m: 60, h: 3_600, d: 86_400 }[v.slice(-1) as 's' | 'm' | 'h' | 'd'])
  .refine((s) => s > 0, 'ttl: must be positive (e.g. 30m, 8h)')
  // A revocation is kept REVOCATION_TTL_MS: a token living longer could outlive its revocation.
  .refine((s) => s * 1000 <= REVOCATION_TTL_MS, `ttl: at most ${REVOCATION_TTL_MS / 86_400_000}d (revocations are kept that long)`)

try {
  const { values } = parseArgs({
    options: {
      tenant: { type: 'string' },
      user: { type: 'string', default: 'dev-user' },
      docs: { type: 'string', default: '*' },
      role: { type: 'string', default: 'editor' },
      ttl: { type: 'string', default: '24h' },
      id: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  })
  if (values.help) {
    console.log(USAGE)
    process.exit(0)
  }
  if (!values.tenant) throw new Error('--tenant is required')
  const claims = Claims.omit({ exp: true }).parse({ sub: values.user, tenant: values.tenant, docs: values.docs.split(',').map((d) => d.trim()), role: values.role, ...(values.id ? { jti: values.id } : {}) })
  const secret = JwtSecret.parse(process.env.DOCFLOW_JWT_SECRET || undefined)
  const extra = { issuer: process.env.DOCFLOW_JWT_ISSUER || undefined, audience: process.env.DOCFLOW_JWT_AUDIENCE || undefined }
  console.log(await mintToken(claims, secret, Ttl.parse(values.ttl), extra as { issuer?: string; audience?: string }))
} catch (err) {
  const msg = err instanceof z.ZodError ? err.issues.map((i) => `${i.path.join('.') || 'value'}: ${i.message}`).join('; ') : (err as Error).message
  console.error(`docflow token: ${msg}\n${USAGE}`)
  process.exit(2)
}
