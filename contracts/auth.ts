import { z } from 'zod'
import { TenantId, UserId } from './ids.ts'

export const Role = { Editor: 'editor', Viewer: 'viewer' } as const
export type Role = (typeof Role)[keyof typeof Role]

/** Claims of a DocFlow JWT (HS256). The tenant comes from here only, never from a URL. */
export const Claims = z.object({
  sub: UserId,
  tenant: TenantId,
  /** Doc-id patterns: "*" is every doc, a trailing or inner "*" matches any run of characters. */
  docs: z.array(z.string().min(1).max(256)).min(1),
  role: z.enum([Role.Editor, Role.Viewer]),
  exp: z.number().int().positive(),
  /** Issued at (seconds): a user's or tenant's revocation covers the tokens issued before it. */
  iat: z.number().int().positive().optional(),
  /** Token id: what a revocation of this one token names. */
  jti: z.string().min(1).max(256).optional(),
})
export type Claims = z.infer<typeof Claims>

/** KV bucket of token revocations; every edge follows it and closes matching sockets. */
export const REVOCATIONS_BUCKET = 'DF_REVOCATIONS'
/**
 * Revocations are kept this long (the bucket's TTL): tokens must expire sooner, or a revoked
 * one would be accepted again once its revocation is gone.
 */
export const REVOCATION_TTL_MS = 7 * 24 * 3_600_000

/**
 * A revocation: one token (`tokenId`), every token of a user issued before `revokedAt`
 * (`userId`), or every token of the tenant issued before it (neither).
 */
export const Revocation = z
  .object({
    tenant: TenantId,
    userId: UserId.optional(),
    tokenId: z.string().min(1).max(256).optional(),
    /** ms since epoch. */
    revokedAt: z.number().int().positive(),
    reason: z.string().max(500).default(''),
  })
  .refine((r) => r.userId === undefined || r.tokenId === undefined, 'a revocation names a user or a token, not both')
export type Revocation = z.infer<typeof Revocation>

/** A bucket entry is JSON, readable with `nats kv get`. */
export const encodeRevocation = (r: Revocation): Uint8Array => new TextEncoder().encode(JSON.stringify(r))
export const decodeRevocation = (bytes: Uint8Array): Revocation => Revocation.parse(JSON.parse(new TextDecoder().decode(bytes)))

/** Its key in REVOCATIONS_BUCKET (ids base64url-encoded: KV keys allow few characters). */
export function revocationKey(r: Pick<Revocation, 'tenant' | 'userId' | 'tokenId'>): string {
  const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64url')
  if (r.tokenId !== undefined) return `${r.tenant}.token.${b64(r.tokenId)}`
  if (r.userId !== undefined) return `${r.tenant}.user.${b64(r.userId)}`
  return `${r.tenant}.all`
}

/** Whether `r` revokes a token with these claims (a token without iat counts as issued before any revocation). */
export function revokes(r: Revocation, claims: Pick<Claims, 'tenant' | 'sub' | 'iat' | 'jti'>): boolean {
  if (claims.tenant !== r.tenant) return false
  if (r.tokenId !== undefined) return claims.jti === r.tokenId
  if (r.userId !== undefined && claims.sub !== r.userId) return false
  return (claims.iat ?? 0) * 1000 <= r.revokedAt
}

/** True when one of the token's doc patterns matches the doc id. */
export function docAllowed(claims: Pick<Claims, 'docs'>, docId: string): boolean {
  return claims.docs.some((pattern) => globMatch(pattern, docId))
}

function globMatch(pattern: string, value: string): boolean {
  if (!pattern.includes('*')) return pattern === value
  const parts = pattern.split('*')
  const first = parts[0]!
  const last = parts[parts.length - 1]!
  if (!value.startsWith(first) || value.length < first.length + last.length || !value.endsWith(last)) return false
  let at = first.length
  for (const part of parts.slice(1, -1)) {
    const found = value.indexOf(part, at)
    if (found < 0 || found + part.length > value.length - last.length) return false
    at = found + part.length
  }
  return true
}
