import { z } from 'zod'
import { DocId, TenantId } from './ids.ts'
import { Bytes, pack, unpack } from './codec.ts'

/**
 * Why core refused an update (the part of a dead letter's reason before the first ':'). Schema
 * and decode failures come from contracts/codec.ts decodeFailureReason; the data-quality ones
 * are in Yjs terms (shared/BRIEF.md "Data quality in Yjs terms"):
 * - conflicting-duplicate: a (clientID, clock) range the document already holds, with other content;
 * - clock-regression: a client's structs restart below what the document holds from it, with
 *   other content, and go on past it (the client's clock went backwards);
 * - malformed-item: an item whose left and right neighbours are the same struct, or a clock of its
 *   own client not made before it (runtime/yjs-items.ts): replicas would place it differently,
 *   so it is not applied (edges refuse such updates; only a publisher that bypassed them sends one);
 * - foreign-client: new structs under a Yjs client id another user first wrote with (a forgery of
 *   that user's next clocks: Yjs would keep them, and drop the real author's edits at those
 *   clocks wherever they came second); edges refuse such updates where they know the owner;
 * - version-regression: applying it would not move the document's version forward (a client
 *   clock going down) though Yjs took it;
 * - sequence-gap: a report, not a refusal — the update waits in the document for clocks that did
 *   not arrive within the configured time (it stays in the op log and applies if they come);
 * - apply: Yjs threw on it; state: the document's stored state did not load;
 * - refused: PostgreSQL refused to store its op-log row (the reason says why); the rest of its
 *   batch committed without it.
 */
export const DeadLetterReason = {
  Schema: 'schema',
  Decode: 'decode',
  Apply: 'apply',
  State: 'state',
  ConflictingDuplicate: 'conflicting-duplicate',
  ClockRegression: 'clock-regression',
  MalformedItem: 'malformed-item',
  ForeignClient: 'foreign-client',
  VersionRegression: 'version-regression',
  SequenceGap: 'sequence-gap',
  Refused: 'refused',
} as const
export type DeadLetterReason = (typeof DeadLetterReason)[keyof typeof DeadLetterReason]

/** The reason class of a full reason ("conflicting-duplicate: client 7 clock 3" -> "conflicting-duplicate"). */
export const deadLetterReasonClass = (reason: string): string => reason.split(':')[0]!

/** Subject token for a dead letter whose tenant is unknown (the message did not decode that far). */
export const UNKNOWN_TENANT_TOKEN = '_'

/** Subject of a dead letter in DLQ_STREAM: `dlq.<tenant>.<reason class>`. */
export function deadLetterSubject(tenant: string | null, reasonClass: string): string {
  const token = reasonClass.replace(/[^a-z0-9-]/g, '_') || 'unknown'
  return `dlq.${tenant === null ? UNKNOWN_TENANT_TOKEN : TenantId.parse(tenant)}.${token}`
}

/** The subjects of one tenant's dead letters in DLQ_STREAM. */
export const tenantDeadLetterSubjects = (tenant: string) => `dlq.${TenantId.parse(tenant)}.>`

/** Every subject of DLQ_STREAM. */
export const DEAD_LETTER_SUBJECTS = 'dlq.>'

/**
 * One dead letter as the DLQ stream carries it: what dead_letters holds for it. `payload` is
 * the original bytes: the update as one envelope when it decoded that far, else the message's.
 */
export const DeadLetterEvent = z.object({
  v: z.literal(1),
  reason: z.string().min(1),
  tenant: TenantId.nullable(),
  docId: DocId.nullable(),
  /** The stream the update came from (AGG) and its sequence there; `item` is its index in a batch message. */
  sourceStream: z.string().min(1),
  sourceSeq: z.number().int().positive(),
  item: z.number().int().min(0),
  subject: z.string(),
  payload: Bytes,
  /** When core dead-lettered it (ms since epoch). */
  at: z.number().int().positive(),
})
export type DeadLetterEvent = z.infer<typeof DeadLetterEvent>
export const encodeDeadLetterEvent = (e: DeadLetterEvent): Uint8Array => pack(e)
export const decodeDeadLetterEvent = (b: Uint8Array): DeadLetterEvent => unpack(DeadLetterEvent, b)

/**
 * Nats-Msg-Id of a dead letter: its source update, so a redelivery or replay of that update
 * within the dedup window is stored once. A sequence-gap report has its own id (it is a report
 * about an update that is also in the op log, not a refusal of it).
 */
export const deadLetterMsgId = (sourceStream: string, sourceSeq: number, item: number, reasonClass: string) =>
  `dlq:${sourceStream}:${sourceSeq}:${item}${reasonClass === DeadLetterReason.SequenceGap ? ':gap' : ''}`
