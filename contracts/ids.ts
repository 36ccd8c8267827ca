import { z } from 'zod'

/** Users of the service account (contracts/tenancy.ts), one per process kind (and provisioning). */
export const ServiceUser = { Edge: 'edge', Core: 'core', Sinks: 'sinks', Admin: 'svc-admin' } as const
export type ServiceUser = (typeof ServiceUser)[keyof typeof ServiceUser]

/** Users inside a tenant's account, named `<tenant>-<kind>` (contracts/tenancy.ts tenantUser). */
export const TENANT_USER_KINDS = ['admin', 'app'] as const
export type TenantUserKind = (typeof TENANT_USER_KINDS)[number]
export const tenantUserName = (tenant: string, kind: TenantUserKind) => `${tenant}-${kind}`

/**
 * nats-server user names are unique across accounts: a tenant whose user takes a service user's
 * name (tenant `svc` → `svc-admin`) makes the whole config invalid, so no reload or start works.
 */
const SERVICE_USERS: ReadonlySet<string> = new Set(Object.values(ServiceUser))
const takesServiceUser = (tenant: string) => TENANT_USER_KINDS.some((kind) => SERVICE_USERS.has(tenantUserName(tenant, kind)))

/** Tenant ids are subject tokens and NATS account names, so they stay lowercase ASCII. */
export const TenantId = z
  .string()
  .regex(/^[a-z][a-z0-9-]{0,30}[a-z0-9]$/, 'tenant: 2-32 chars of a-z, 0-9 and "-", starting with a letter')
  .refine((tenant) => !takesServiceUser(tenant), {
    error: (issue) => `tenant: ${JSON.stringify(issue.input)} is reserved (its NATS users would be named like a service user: ${[...SERVICE_USERS].join(', ')})`,
  })
export type TenantId = z.infer<typeof TenantId>

/**
 * 1 to `max` characters, none a control character (`what` names it in the messages). Such ids
 * are stored as text, which PostgreSQL refuses to hold a NUL in: one user id with a NUL in an
 * edit failed every commit of its partition, forever.
 */
const plainText = (what: string, max: number) =>
  z
    .string()
    .min(1, `${what}: empty`)
    .max(max, `${what}: longer than ${max} characters`)
    // eslint-disable-next-line no-control-regex
    .regex(/^[^\u0000-\u001f\u007f]+$/, `${what}: contains control characters`)

/** Doc ids are whatever the editor names a room: 1-256 characters, no control characters. */
export const DocId = plainText('docId', 256)
export type DocId = z.infer<typeof DocId>

/** A user id (a token's `sub`). */
export const UserId = plainText('user id', 256)
export type UserId = z.infer<typeof UserId>

/**
 * Text core stores from an envelope (op_log.user_id, edge_id): no NUL, which PostgreSQL cannot
 * hold in text; other control characters pass, as they did before a token's `sub` refused them,
 * so a replay of older stream messages stores what it stored then.
 */
const storedText = (what: string, max: number) => z.string().min(1).max(max).refine((s) => !s.includes('\u0000'), `${what}: contains a NUL character`)

/** An envelope's user id (the `sub` of the token that sent it). */
export const EnvelopeUserId = storedText('user id', 256)

/** An edge's id, in every envelope it publishes. */
export const EdgeId = storedText('edge id', 128)

const PLAIN = /[A-Za-z0-9_-]/
const HEX_BYTE = /^~[0-9A-F]{2}/

/**
 * A doc id as one NATS subject token: [A-Za-z0-9_-] kept, every other UTF-8 byte as ~HH.
 * Reversible and readable for the ids editors usually use ("spec-2024_q3").
 */
export function docKey(docId: string): string {
  let out = ''
  for (const ch of docId) {
    if (PLAIN.test(ch)) out += ch
    else for (const b of Buffer.from(ch, 'utf8')) out += '~' + b.toString(16).toUpperCase().padStart(2, '0')
  }
  return out
}

/** Inverse of docKey; throws on a token docKey cannot have produced. */
export function docIdFromKey(key: string): string {
  const bytes: number[] = []
  for (let i = 0; i < key.length; ) {
    const ch = key[i]!
    if (ch === '~') {
      if (!HEX_BYTE.test(key.slice(i, i + 3))) throw new Error(`bad doc key escape at ${i}: ${key}`)
      bytes.push(parseInt(key.slice(i + 1, i + 3), 16))
      i += 3
    } else if (PLAIN.test(ch)) {
      bytes.push(ch.charCodeAt(0))
      i += 1
    } else {
      throw new Error(`bad doc key character ${JSON.stringify(ch)}: ${key}`)
    }
  }
  const docId = new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(bytes))
  if (docKey(docId) !== key) throw new Error(`non-canonical doc key: ${key}`)
  return DocId.parse(docId)
}
