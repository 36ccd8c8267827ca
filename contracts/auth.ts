import { z } from 'zod'
import { TenantId } from './ids.ts'

export const Role = { Editor: 'editor', Viewer: 'viewer' } as const
export type Role = (typeof Role)[keyof typeof Role]

/** Claims of a DocFlow JWT (HS256). The tenant comes from here only, never from a URL. */
export const Claims = z.object({
  sub: z.string().min(1).max(256),
  tenant: TenantId,
  /** Doc-id patterns: "*" is every doc, a trailing or inner "*" matches any run of characters. */
  docs: z.array(z.string().min(1).max(256)).min(1),
  role: z.enum([Role.Editor, Role.Viewer]),
  exp: z.number().int().positive(),
})
export type Claims = z.infer<typeof Claims>

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
