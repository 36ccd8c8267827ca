import { z } from 'zod'
import { DocId, TenantId } from './ids.ts'
import { pack, unpack } from './codec.ts'

/**
 * What an applied update did, in editor terms, derived from its Yjs structs and delete set:
 * - insert: new content (ContentString, ContentEmbed, ContentType, ContentAny/JSON/Binary/Doc);
 * - delete: a non-empty delete set;
 * - format: ContentFormat items (rich-text attributes);
 * - comment: new content under the root type named COMMENTS_ROOT (an editor keeps its comment
 *   threads there), counted besides insert/format.
 */
export const OpKind = { Insert: 'insert', Delete: 'delete', Format: 'format', Comment: 'comment' } as const
export type OpKind = (typeof OpKind)[keyof typeof OpKind]

/** Root type of a document whose content counts as comments (op kind 'comment'). */
export const COMMENTS_ROOT = 'comments'

/**
 * One cleaned event per update core applied (never for duplicates, pending updates or dead
 * letters), published to CLEAN_STREAM after its PostgreSQL commit, in a CleanEventBatch. Sinks
 * (search, analytics, audit) read this stream and the op log only.
 */
export const CleanEvent = z.object({
  v: z.literal(1),
  tenant: TenantId,
  docId: DocId,
  /** `sub` of the token that sent the update. */
  userId: z.string().min(1),
  /** Yjs client ids whose clocks the update moved (more than the sender's when it released pending structs). */
  clients: z.array(z.number().int().min(0)),
  /** Client clock (ms since epoch) when the edit was made; ingestTs when the client gave none. */
  eventTs: z.number().int().positive(),
  /** Edge clock (ms since epoch) when the update arrived. */
  ingestTs: z.number().int().positive(),
  opKinds: z.array(z.enum([OpKind.Insert, OpKind.Delete, OpKind.Format, OpKind.Comment])),
  sizes: z.object({
    /** The Yjs update's bytes. */
    updateBytes: z.number().int().min(0),
    /** Characters (UTF-16 units, Yjs's measure) of text inserted. */
    insertedChars: z.number().int().min(0),
    /** Items (characters, embeds, formats) the update deleted. */
    deleted: z.number().int().min(0),
  }),
  /** Where the update came from: stream (AGG), its sequence there, its index in a batch message. */
  sourceStream: z.string().min(1),
  sourceSeq: z.number().int().positive(),
  item: z.number().int().min(0),
})
export type CleanEvent = z.infer<typeof CleanEvent>

/** Most events one CLEAN message carries. */
export const MAX_CLEAN_EVENTS_PER_MESSAGE = 1_024

/**
 * One CLEAN stream message: the cleaned events of the updates of one source stream message (an
 * edge batches a tenant partition's updates into one, contracts/envelope.ts EditBatch), in item
 * order. Batched like the edits themselves: one JetStream message per event cost core and
 * nats-server about 55 us of CPU per applied update, several times what applying it costs; and
 * grouped by source message, not by commit, so the same source message always gives the same
 * CLEAN message and id, however commits happen to fall (a rebuild or a replay of the stream).
 */
export const CleanEventBatch = z.object({
  v: z.literal(1),
  tenant: TenantId,
  events: z.array(CleanEvent).min(1).max(MAX_CLEAN_EVENTS_PER_MESSAGE),
})
export type CleanEventBatch = z.infer<typeof CleanEventBatch>
export const encodeCleanEventBatch = (b: CleanEventBatch): Uint8Array => pack(b)
export const decodeCleanEventBatch = (b: Uint8Array): CleanEventBatch => unpack(CleanEventBatch, b)

/** Subject of a tenant's cleaned events in CLEAN_STREAM: `clean.<tenant>`. */
export const cleanSubject = (tenant: string) => `clean.${TenantId.parse(tenant)}`

/** Every subject of CLEAN_STREAM. */
export const CLEAN_SUBJECTS = 'clean.>'

/**
 * Nats-Msg-Id of a CLEAN message: the source stream and sequence of its events and the item of
 * the first (a source message with more than MAX_CLEAN_EVENTS_PER_MESSAGE applied updates spans
 * several), so a republish within the dedup window is stored once. Core never emits an event for
 * an update it committed before (a redelivery or replay is skipped), so replays add nothing; a
 * consumer that must never see an event twice (past the dedup window) keys events by
 * (sourceStream, sourceSeq, item).
 */
export const cleanMsgId = (sourceStream: string, first: { sourceSeq: number; item: number }) => `clean:${sourceStream}:${first.sourceSeq}:${first.item}`
