import { createHash } from 'node:crypto'
import { z } from 'zod'
import { DocId, TenantId } from './ids.ts'
import { Bytes, pack, unpack } from './codec.ts'

export const ENVELOPE_VERSION = 1

/** One Yjs document update as an edge publishes it to the tenant's edit stream. */
export const EditEnvelope = z.object({
  v: z.literal(ENVELOPE_VERSION),
  tenant: TenantId,
  docId: DocId,
  /** `sub` of the token that sent it. */
  userId: z.string().min(1).max(256),
  /** The Yjs update (v1 encoding), as the client sent it. */
  update: Bytes.refine((b) => b.length > 0, 'empty update'),
  /** Edge wall clock (ms since epoch) when the update arrived from the client. */
  ingestTs: z.number().int().positive(),
  edgeId: z.string().min(1).max(128),
})
export type EditEnvelope = z.infer<typeof EditEnvelope>

export const encodeEnvelope = (e: EditEnvelope): Uint8Array => pack(e)
export const decodeEnvelope = (bytes: Uint8Array): EditEnvelope => unpack(EditEnvelope, bytes)

/**
 * Nats-Msg-Id of an update: tenant-prefixed (one id in two tenants would stall the aggregate
 * source on nats-server 2.9, see NATS-TENANCY.md) and derived from doc + content, so a client
 * retry of the same update within the dedup window is stored once.
 */
export function editMsgId(tenant: string, docId: string, update: Uint8Array): string {
  const h = createHash('sha256').update(docId).update('\0').update(update).digest('base64url')
  return `${tenant}:${h.slice(0, 32)}`
}
