import { createHash } from 'node:crypto'
import { z } from 'zod'
import { DocId, EdgeId, EnvelopeUserId, TenantId } from './ids.ts'
import { Bytes, pack, unpack } from './codec.ts'
import { MAX_EDIT_PARTITIONS } from './subjects.ts'

export const ENVELOPE_VERSION = 1
export const BATCH_VERSION = 2

/** Most updates one batch carries (its bytes are bounded by the server's max_payload). */
export const MAX_BATCH_UPDATES = 4_096

/** One Yjs document update as an edge publishes it to the tenant's edit stream. */
export const EditEnvelope = z.object({
  v: z.literal(ENVELOPE_VERSION),
  tenant: TenantId,
  docId: DocId,
  /** `sub` of the token that sent it. */
  userId: EnvelopeUserId,
  /** The Yjs update (v1 encoding), as the client sent it. */
  update: Bytes.refine((b) => b.length > 0, 'empty update'),
  /** Edge wall clock (ms since epoch) when the update arrived from the client. */
  ingestTs: z.number().int().positive(),
  /**
   * Client clock (ms since epoch) when the edit was made, at most ingestTs: HTTP ingest's
   * X-Event-Time (offline edits synced later). Absent for socket updates (the y-websocket protocol
   * carries no time) and in messages from before it existed: the event time is then ingestTs.
   */
  eventTs: z.number().int().positive().optional(),
  edgeId: EdgeId,
  /**
   * 'http': HTTP ingest published it without trying it on the document (the edge may hold no
   * room for it), so core checks its items in the document's context. Absent: an edge's room
   * proved it (socket updates, always batched) or a message from before it existed.
   */
  source: z.literal('http').optional(),
})
export type EditEnvelope = z.infer<typeof EditEnvelope>

/** HTTP ingest request header: when the client made the edit (ISO 8601 with a zone, or ms since epoch). */
export const EVENT_TIME_HEADER = 'x-event-time'

/** How far ahead of the edge's clock an X-Event-Time may be before the answer says it was clamped. */
export const EVENT_TIME_SKEW_MS = 30_000

const ISO_8601_WITH_ZONE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$/i

/**
 * An X-Event-Time value as ms since epoch: digits are ms since epoch, anything else must be ISO
 * 8601 with a zone (a time without one would be read in the edge's zone). Throws RangeError
 * with the reason for anything else.
 */
export function parseEventTime(value: string): number {
  const ms = /^\d{1,16}$/.test(value) ? Number(value) : ISO_8601_WITH_ZONE.test(value) ? Date.parse(value) : NaN
  if (!Number.isSafeInteger(ms) || ms <= 0) throw new RangeError(`${EVENT_TIME_HEADER} must be ISO 8601 with a zone (2024-05-01T09:30:00Z) or ms since epoch, not ${JSON.stringify(value.slice(0, 64))}`)
  return ms
}

export const encodeEnvelope = (e: EditEnvelope): Uint8Array => pack(e)
export const decodeEnvelope = (bytes: Uint8Array): EditEnvelope => unpack(EditEnvelope, bytes)

/** One update inside a batch: an EditEnvelope without what the batch says once. */
export const BatchedUpdate = EditEnvelope.pick({ docId: true, userId: true, update: true, ingestTs: true, eventTs: true })
export type BatchedUpdate = z.infer<typeof BatchedUpdate>

/**
 * Updates to documents of one partition of one tenant, published by one edge as one stream
 * message (editBatchSubject): one store, ack, copy and delivery for many updates. In stream
 * order, then in array order, like single envelopes.
 */
export const EditBatch = z.object({
  v: z.literal(BATCH_VERSION),
  tenant: TenantId,
  /** editPartitionOf of every update's document. */
  partition: z.number().int().min(0).max(MAX_EDIT_PARTITIONS - 1),
  edgeId: EdgeId,
  updates: z.array(BatchedUpdate).min(1).max(MAX_BATCH_UPDATES),
})
export type EditBatch = z.infer<typeof EditBatch>

export const encodeBatch = (b: EditBatch): Uint8Array => pack(b)

/**
 * A stream message as the edits it carries: one for an envelope, each update of a batch. Told
 * apart by `v`, so a schema failure names the fields of the form the message claims to be.
 */
export const EditMessage = z.discriminatedUnion('v', [EditEnvelope, EditBatch])

/**
 * Decodes a stream message (either form) into single envelopes; throws with the reason when the
 * message does not match either schema. Whether each update's document belongs to the message's
 * partition is the reader's check (core dead-letters a misfiled update alone).
 */
export function decodeEdits(bytes: Uint8Array): EditEnvelope[] {
  const m = unpack(EditMessage, bytes)
  if (m.v === ENVELOPE_VERSION) return [m]
  return m.updates.map((u) => ({ v: ENVELOPE_VERSION, tenant: m.tenant, edgeId: m.edgeId, ...u }))
}

/**
 * Nats-Msg-Id of a batch: the publisher (one per edge process, random) and its batch counter,
 * so a retry of the same batch within the dedup window is stored once. Tenant-prefixed like
 * editMsgId.
 */
export const editBatchMsgId = (tenant: string, publisher: string, n: number) => `${tenant}:b:${publisher}:${n}`

/**
 * Nats-Msg-Id of an update POSTed with an Idempotency-Key: the key is the client's, scoped to its
 * user and document, so the same request through any edge is stored once within the window.
 */
export function editIdempotencyMsgId(tenant: string, userId: string, docId: string, key: string): string {
  const h = createHash('sha256').update(userId).update('\0').update(docId).update('\0').update(key).digest('base64url')
  return `${tenant}:k:${h.slice(0, 32)}`
}

/**
 * Nats-Msg-Id of an update: tenant-prefixed (one id in two tenants would stall the aggregate
 * source on nats-server 2.9, see NATS-TENANCY.md) and derived from doc + content, so a client
 * retry of the same update within the dedup window is stored once.
 */
export function editMsgId(tenant: string, docId: string, update: Uint8Array): string {
  const h = createHash('sha256').update(docId).update('\0').update(update).digest('base64url')
  return `${tenant}:${h.slice(0, 32)}`
}
