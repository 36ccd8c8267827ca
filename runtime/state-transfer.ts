import { randomBytes } from 'node:crypto'
import type { Msg, NatsConnection } from '@nats-io/transport-node'
import { STATE_PART_BYTES, decodeStateReplyPart, encodeStateReplyPart, encodeStateRequest, type StateReply, type StateRequest } from '../contracts/mod.ts'

/** A state transfer that did not arrive whole (a part missing, or a part that does not decode). */
export class StateTransferError extends Error {
  override name = 'StateTransferError'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
  }
}
export const isStateTransferError = (e: unknown): e is StateTransferError => e instanceof StateTransferError

/**
 * Answers a state request with `reply`, split into parts of at most STATE_PART_BYTES so a
 * document of any size fits NATS's max_payload. Publishing can throw (connection closed).
 */
export function respondState(msg: Msg, reply: StateReply): void {
  const transfer = randomBytes(9).toString('base64url')
  if (reply.status !== 'found') {
    msg.respond(encodeStateReplyPart({ ...reply, transfer }))
    return
  }
  const parts = Math.max(1, Math.ceil(reply.update.byteLength / STATE_PART_BYTES))
  for (let part = 0; part < parts; part++) {
    const update = reply.update.subarray(part * STATE_PART_BYTES, (part + 1) * STATE_PART_BYTES)
    msg.respond(encodeStateReplyPart({ status: 'found', transfer, part, parts, update }))
  }
}

/**
 * Requests a document's state and reassembles its parts. Null when nobody answered within
 * `timeoutMs` (no responders, or a timeout); throws StateTransferError when an answer came
 * but not all of it.
 */
export async function requestState(nc: NatsConnection, subject: string, request: StateRequest, timeoutMs: number): Promise<StateReply | null> {
  let transfer: string | null = null
  let chunks: (Uint8Array | undefined)[] = []
  let received = 0
  try {
    const replies = await nc.requestMany(subject, encodeStateRequest(request), { strategy: 'timer', maxWait: timeoutMs, noMux: true })
    for await (const msg of replies) {
      let part
      try {
        part = decodeStateReplyPart(msg.data)
      } catch (err) {
        throw new StateTransferError(`bad state reply part from ${subject}`, { cause: err })
      }
      if (transfer !== null && part.transfer !== transfer) continue // a slower peer's answer
      transfer = part.transfer
      if (part.status !== 'found') return part.status === 'missing' ? { status: 'missing' } : { status: 'error', message: part.message }
      if (chunks.length === 0) chunks = new Array<Uint8Array | undefined>(part.parts)
      if (part.parts !== chunks.length) throw new StateTransferError(`state reply from ${subject} changed its part count`)
      if (!chunks[part.part]) received++
      chunks[part.part] = part.update
      if (received === chunks.length) return { status: 'found', update: Buffer.concat(chunks as Uint8Array[]) }
    }
  } catch (err) {
    if (isStateTransferError(err)) throw err
    if (transfer === null) return null // no responders, or the connection went: nobody answered
    throw new StateTransferError(`state transfer from ${subject} broke off`, { cause: err })
  }
  if (transfer === null) return null
  throw new StateTransferError(`state transfer from ${subject} incomplete: ${received}/${chunks.length} parts in ${timeoutMs} ms`)
}
