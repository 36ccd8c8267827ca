import { randomBytes } from 'node:crypto'
import { createInbox, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node'
import { inboxPrefixOf } from './nats.ts'
import { STATE_PART_BYTES, decodeStateReplyPart, encodeStateReplyPart, encodeStateRequest, decodeClientUsers, encodeClientUsers, type StateReply, type StateRequest } from '../contracts/mod.ts'

/** nats-server's status code on a request nobody is subscribed to answer. */
const NO_RESPONDERS = 503

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
  const runs = [reply.update, ...(reply.tail ? [reply.tail] : [])]
  const tailAt = reply.tail ? { tailAt: reply.update.byteLength } : {}
  const ownersAt = reply.owners ? { ownersAt: runs.reduce((n, r) => n + r.byteLength, 0) } : {}
  if (reply.owners) runs.push(encodeClientUsers(reply.owners))
  const bytes = runs.length === 1 ? runs[0]! : Buffer.concat(runs)
  const parts = Math.max(1, Math.ceil(bytes.byteLength / STATE_PART_BYTES))
  for (let part = 0; part < parts; part++) {
    const update = bytes.subarray(part * STATE_PART_BYTES, (part + 1) * STATE_PART_BYTES)
    msg.respond(encodeStateReplyPart({ status: 'found', transfer, part, parts, update, ...tailAt, ...ownersAt }))
  }
}

/**
 * Requests a document's state and reassembles its parts. Null when nobody answered within
 * `timeoutMs` (no responders, or a timeout); throws StateTransferError when an answer came
 * but its parts stopped coming for `timeoutMs`. Its own subscription and timer: it settles on time even while the
 * server is unreachable (a paused nats-server), when anything needing a round trip would hang.
 */
export function requestState(nc: NatsConnection, subject: string, request: StateRequest, timeoutMs: number): Promise<StateReply | null> {
  return new Promise<StateReply | null>((resolve, reject) => {
    let transfer: string | null = null
    let chunks: (Uint8Array | undefined)[] = []
    let received = 0
    let settled = false
    let sub: Subscription | null = null
    const finish = (outcome: StateReply | null | StateTransferError) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      sub?.unsubscribe()
      if (outcome instanceof StateTransferError) reject(outcome)
      else resolve(outcome)
    }
    // Before anything answered, a failure means nobody answered; after, the transfer broke off.
    const failed = (why: string, cause?: unknown) => finish(transfer === null ? null : new StateTransferError(`state transfer from ${subject} ${why}`, { cause }))
    const onPart = (msg: Msg) => {
      if (msg.data.length === 0 && msg.headers?.code === NO_RESPONDERS) return finish(null)
      let part
      try {
        part = decodeStateReplyPart(msg.data)
      } catch (err) {
        return finish(new StateTransferError(`bad state reply part from ${subject}`, { cause: err }))
      }
      if (transfer !== null && part.transfer !== transfer) return // a slower peer's answer
      transfer = part.transfer
      if (part.status === 'error') return finish({ status: 'error', message: part.message })
      if (part.status !== 'found') return finish({ status: part.status })
      if (chunks.length === 0) chunks = new Array<Uint8Array | undefined>(part.parts)
      if (part.parts !== chunks.length) return finish(new StateTransferError(`state reply from ${subject} changed its part count`))
      if (!chunks[part.part]) received++
      chunks[part.part] = part.update
      timer.refresh()
      if (received < chunks.length) return
      const all = Buffer.concat(chunks as Uint8Array[])
      const end = part.ownersAt ?? all.byteLength
      if (end > all.byteLength || (part.tailAt ?? 0) > end) return finish(new StateTransferError(`state reply from ${subject} puts its tail or owners past its end`))
      let owners
      try {
        owners = part.ownersAt === undefined ? {} : { owners: decodeClientUsers(all.subarray(end)) }
      } catch (err) {
        return finish(new StateTransferError(`bad owners in the state reply from ${subject}`, { cause: err }))
      }
      const bytes = all.subarray(0, end)
      if (part.tailAt === undefined) return finish({ status: 'found', update: bytes, ...owners })
      finish({ status: 'found', update: bytes.subarray(0, part.tailAt), tail: bytes.subarray(part.tailAt), ...owners })
    }
    // Reset by every part: a large document still arriving on a busy process is not cut off.
    const timer = setTimeout(() => failed(`incomplete: ${received}/${chunks.length} parts, none in the last ${timeoutMs} ms`), timeoutMs)
    try {
      const inbox = createInbox(inboxPrefixOf(nc))
      sub = nc.subscribe(inbox, { callback: (err, msg) => (err ? failed('subscription failed', err) : onPart(msg)) })
      nc.publish(subject, encodeStateRequest(request), { reply: inbox })
    } catch (err) {
      failed('request not sent', err) // connection closed or draining
    }
  })
}
