import { z } from 'zod'
import { DocId, TenantId } from './ids.ts'
import { Bytes, pack, unpack } from './codec.ts'

export const FanKind = { Update: 'u', Awareness: 'a' } as const
export type FanKind = (typeof FanKind)[keyof typeof FanKind]

/** What edges exchange about one document: a durable update or a presence change. */
export const FanMessage = z.object({
  kind: z.enum([FanKind.Update, FanKind.Awareness]),
  edgeId: z.string().min(1),
  payload: Bytes,
})
export type FanMessage = z.infer<typeof FanMessage>
export const encodeFan = (m: FanMessage) => pack(m)
export const decodeFan = (b: Uint8Array) => unpack(FanMessage, b)

/** Ask for a document's state; with a state vector, only what the asker lacks comes back. */
export const StateRequest = z.object({
  tenant: TenantId,
  docId: DocId,
  stateVector: Bytes.optional(),
})
export type StateRequest = z.infer<typeof StateRequest>
export const encodeStateRequest = (m: StateRequest) => pack(m)
export const decodeStateRequest = (b: Uint8Array) => unpack(StateRequest, b)

export const StateReply = z.discriminatedUnion('status', [
  z.object({ status: z.literal('found'), update: Bytes }),
  z.object({ status: z.literal('missing') }),
  z.object({ status: z.literal('error'), message: z.string() }),
])
export type StateReply = z.infer<typeof StateReply>
export const encodeStateReply = (m: StateReply) => pack(m)
export const decodeStateReply = (b: Uint8Array) => unpack(StateReply, b)
