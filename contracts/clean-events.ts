import { z } from 'zod'
import { DocId, TenantId, docKey } from './ids.ts'
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
 * letters), published to CLEAN_STREAM after its PostgreSQL commit. Sinks (search, analytics,
 * audit) read this stream and the op log only.
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
export const encodeCleanEvent = (e: CleanEvent): Uint8Array => pack(e)
export const decodeCleanEvent = (b: Uint8Array): CleanEvent => unpack(CleanEvent, b)

/** Subject of a cleaned event in CLEAN_STREAM: `clean.<tenant>.<docKey>`. */
export const cleanSubject = (tenant: string, docId: string) => `clean.${TenantId.parse(tenant)}.${docKey(docId)}`

/** Every subject of CLEAN_STREAM. */
export const CLEAN_SUBJECTS = 'clean.>'

/**
 * Nats-Msg-Id of a cleaned event: its source update's stream sequence and item, so a redelivery
 * or a replay within the dedup window is stored once. Older replays publish again: consumers
 * key events by (sourceStream, sourceSeq, item).
 */
export const cleanMsgId = (sourceStream: string, sourceSeq: number, item: number) => `clean:${sourceStream}:${sourceSeq}:${item}`
