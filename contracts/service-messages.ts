import { z } from 'zod'
import { DocId, EnvelopeUserId, TenantId } from './ids.ts'
import { Bytes, pack, unpack } from './codec.ts'

export const FanKind = { Update: 'u', Awareness: 'a', Refetch: 'r', Last: 'l' } as const
export type FanKind = (typeof FanKind)[keyof typeof FanKind]

/**
 * What edges exchange about one document: a durable (JetStream-acked) update or a presence
 * change. An update names its sender's fan stream (`stream`: one per room instance on one
 * edge) and a `seq` that grows by one per update on that stream, so a receiver that sees a
 * seq other than the last plus one knows it missed a fan-out and fetches it from core.
 * Presence is best effort and carries no sequence. A refetch tells every room of the document
 * that core holds an update none was sent (an HTTP retry whose first try JetStream stored, its
 * PubAck lost): each pulls it from core. A last marks a stream's last update so far, sent once
 * the stream has been quiet a moment: a receiver that holds less missed the burst's end (which no
 * later update would reveal) and fetches it.
 */
export const FanMessage = z.discriminatedUnion('kind', [
  /**
   * `single`: the stream holds only this update (HTTP ingest's), so a receiver keeps no sequence for it.
   * `userId`: who sent it, so the receiving room learns that user owns its Yjs client ids (ClientOwners).
   */
  z.object({ kind: z.literal(FanKind.Update), edgeId: z.string().min(1), stream: z.string().min(1).max(128), seq: z.number().int().min(1), payload: Bytes, single: z.literal(true).optional(), userId: EnvelopeUserId.optional() }),
  /** `users`: the user of each of its presence ids the sending edge's sockets introduced, so a peer keeps a left client's id for its user (awareness-guard.ts). */
  z.object({ kind: z.literal(FanKind.Awareness), edgeId: z.string().min(1), payload: Bytes, users: z.array(z.tuple([z.number().int().nonnegative(), EnvelopeUserId])).max(4_096).optional() }),
  z.object({ kind: z.literal(FanKind.Refetch), edgeId: z.string().min(1) }),
  z.object({ kind: z.literal(FanKind.Last), edgeId: z.string().min(1), stream: z.string().min(1).max(128), seq: z.number().int().min(1) }),
])
export type FanMessage = z.infer<typeof FanMessage>
export const encodeFan = (m: FanMessage) => pack(m)
export const decodeFan = (b: Uint8Array) => unpack(FanMessage, b)

/** An edge is alive (or, `gone`, stopping). */
export const EdgeBeat = z.object({ edgeId: z.string().min(1).max(256), gone: z.boolean() })
export type EdgeBeat = z.infer<typeof EdgeBeat>
export const encodeEdgeBeat = (m: EdgeBeat) => pack(m)
export const decodeEdgeBeat = (b: Uint8Array) => unpack(EdgeBeat, b)

/** Ask for a document's state; with a state vector, only what the asker lacks comes back. */
export const StateRequest = z.object({
  tenant: TenantId,
  docId: DocId,
  stateVector: Bytes.optional(),
  /** The asker applies a `tail` apart from the state (StateReply): core need not merge them first. */
  acceptsTail: z.boolean().optional(),
  /** The asker reads `owners` (StateReply): a room that opens asks once; older askers would take their bytes for the tail. */
  wantsOwners: z.boolean().optional(),
})
export type StateRequest = z.infer<typeof StateRequest>
export const encodeStateRequest = (m: StateRequest) => pack(m)
export const decodeStateRequest = (b: Uint8Array) => unpack(StateRequest, b)

/**
 * Which user first wrote with each Yjs client id of a document: [client id, user id] pairs. A
 * client id belongs to that user for good (core refuses another user's structs under it, as
 * DeadLetterReason.ForeignClient), so a room learns them with the state and refuses a forgery
 * before its clients get it.
 */
export const ClientUsers = z.array(z.tuple([z.number().int().min(0).max(0xffffffff), EnvelopeUserId]))
export type ClientUsers = z.infer<typeof ClientUsers>
export const encodeClientUsers = (m: ClientUsers) => pack(m)
export const decodeClientUsers = (b: Uint8Array) => unpack(ClientUsers, b)

export const StateReply = z.discriminatedUnion('status', [
  /**
   * `tail`, only to an asker that accepts one: an update to apply after `update` (core's stored
   * state and the op-log rows after it, merged: merging them into the large state would cost
   * core tens of ms on every cold load). `owners`: ClientUsers of what the state holds.
   */
  z.object({ status: z.literal('found'), update: Bytes, tail: Bytes.optional(), owners: ClientUsers.optional() }),
  z.object({ status: z.literal('missing') }),
  /** An operator deleted the document (hidden until restored): the edge closes its sockets with CloseCode.DocumentDeleted. */
  z.object({ status: z.literal('deleted') }),
  z.object({ status: z.literal('error'), message: z.string() }),
])
export type StateReply = z.infer<typeof StateReply>

/**
 * Largest state bytes in one reply message. A document's state can outgrow nats-server's
 * max_payload (8 MB here, 1 MB by default), so a reply is a run of parts of at most this size.
 */
export const STATE_PART_BYTES = 512 * 1024

/**
 * One message of a state reply on the wire: `found` states are split into `parts` messages
 * that share a `transfer` id (several peers may answer one request; the asker keeps the first
 * transfer and ignores the rest).
 */
export const StateReplyPart = z.discriminatedUnion('status', [
  /**
   * The parts carry `update`, `tail` and the encoded `owners` (encodeClientUsers: a document's
   * writers can outgrow a message too) as one run of bytes; the tail starts at byte `tailAt`,
   * the owners at `ownersAt`.
   */
  z.object({ status: z.literal('found'), transfer: z.string().min(1).max(64), part: z.number().int().min(0), parts: z.number().int().min(1).max(65_536), update: Bytes, tailAt: z.number().int().min(0).optional(), ownersAt: z.number().int().min(0).optional() }),
  z.object({ status: z.literal('missing'), transfer: z.string().min(1).max(64) }),
  z.object({ status: z.literal('deleted'), transfer: z.string().min(1).max(64) }),
  z.object({ status: z.literal('error'), transfer: z.string().min(1).max(64), message: z.string() }),
]).refine((m) => m.status !== 'found' || m.part < m.parts, 'part beyond parts')
export type StateReplyPart = z.infer<typeof StateReplyPart>
export const encodeStateReplyPart = (m: StateReplyPart) => pack(m)
export const decodeStateReplyPart = (b: Uint8Array) => unpack(StateReplyPart, b)

/**
 * Core to one edge (ServiceSubjects.committed): these of its stream messages (Nats-Msg-Id) are
 * committed to PostgreSQL, or were already — except, per message in `refused`, the updates (by
 * index in a batch message) that were dead-lettered instead of applied. Only messages the edge
 * marked with SAVED_NOTICE_HEADER. Core NATS, so at most once: an edge that missed one asks again
 * (CommittedQuery); until it hears, its clients are not told those edits are saved.
 */
export const CommittedNotice = z.object({
  msgIds: z.array(z.string().min(1).max(512)).min(1),
  refused: z.array(z.object({ msgId: z.string().min(1).max(512), items: z.array(z.number().int().min(0)).min(1) })).default([]),
})
export type CommittedNotice = z.infer<typeof CommittedNotice>
export const encodeCommittedNotice = (m: CommittedNotice) => pack(m)
export const decodeCommittedNotice = (b: Uint8Array) => unpack(CommittedNotice, b)

/** Most message ids one CommittedQuery names. */
export const COMMITTED_QUERY_MAX_IDS = 1_000

/**
 * An edge to every core (ServiceSubjects.committedQuery): which of these of its stream messages
 * did you tell me were committed? Asked for messages whose notice has not come (one sent while
 * the edge was away from NATS is lost); each core answers with a CommittedNotice of those it
 * remembers telling (core/committed-memory.ts), or not at all.
 */
export const CommittedQuery = z.object({
  edgeId: z.string().min(1).max(256),
  msgIds: z.array(z.string().min(1).max(512)).min(1).max(COMMITTED_QUERY_MAX_IDS),
})
export type CommittedQuery = z.infer<typeof CommittedQuery>
export const encodeCommittedQuery = (m: CommittedQuery) => pack(m)
export const decodeCommittedQuery = (b: Uint8Array) => unpack(CommittedQuery, b)

/** What happened to a document (ServiceSubjects.docNotice). */
export const DocEvent = { Deleted: 'deleted', Restored: 'restored', Erased: 'erased' } as const
export type DocEvent = (typeof DocEvent)[keyof typeof DocEvent]

/**
 * The ops CLI tells every edge and core that a document was deleted, restored or erased (core
 * NATS, best effort: the database is the truth, edges ask core at every room open). Deleted or
 * erased: edges close the document's rooms with CloseCode.DocumentDeleted, cores drop their
 * in-memory copy so no compaction writes erased content back.
 */
export const DocNotice = z.object({ tenant: TenantId, docId: DocId, event: z.enum([DocEvent.Deleted, DocEvent.Restored, DocEvent.Erased]) })
export type DocNotice = z.infer<typeof DocNotice>
export const encodeDocNotice = (m: DocNotice) => pack(m)
export const decodeDocNotice = (b: Uint8Array) => unpack(DocNotice, b)
