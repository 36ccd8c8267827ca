import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import * as syncProtocol from 'y-protocols/sync'
import * as Y from 'yjs'
import { malformedItem, type UpdateMeta } from '../runtime/yjs-items.ts'
import { shapeOf, type UpdateShape } from './update-shape.ts'

/** Top-level message types of the y-websocket protocol. */
export const MessageType = { Sync: 0, Awareness: 1, Auth: 2, QueryAwareness: 3 } as const

export type ClientMessage =
  | { type: 'sync-step1'; stateVector: Uint8Array }
  /** `step2`: a sync step 2, the client's answer to a sync step 1 (everything the asker lacked). */
  | { type: 'update'; update: Uint8Array; step2: boolean }
  | { type: 'awareness'; update: Uint8Array }
  | { type: 'query-awareness' }

export class ProtocolError extends Error {
  override name = 'ProtocolError'
}

/** A Yjs update with an item replicas would place differently (runtime/yjs-items.ts): poisoned, like one Yjs throws on. */
export class MalformedUpdateError extends ProtocolError {
  override name = 'MalformedUpdateError'
}

/** Parses one client frame; throws ProtocolError on anything the protocol does not allow. */
export function parseClientMessage(frame: Uint8Array): ClientMessage {
  try {
    const d = decoding.createDecoder(frame)
    const type = decoding.readVarUint(d)
    let msg: ClientMessage
    switch (type) {
      case MessageType.Sync: {
        const sub = decoding.readVarUint(d)
        const payload = decoding.readVarUint8Array(d)
        if (sub === syncProtocol.messageYjsSyncStep1) msg = { type: 'sync-step1', stateVector: payload }
        else if (sub === syncProtocol.messageYjsSyncStep2 || sub === syncProtocol.messageYjsUpdate) msg = { type: 'update', update: payload, step2: sub === syncProtocol.messageYjsSyncStep2 }
        else throw new ProtocolError(`unknown sync message type ${sub}`)
        break
      }
      case MessageType.Awareness:
        msg = { type: 'awareness', update: decoding.readVarUint8Array(d) }
        break
      case MessageType.QueryAwareness:
        msg = { type: 'query-awareness' }
        break
      default:
        throw new ProtocolError(`unknown message type ${type}`)
    }
    if (decoding.hasContent(d)) throw new ProtocolError('trailing bytes after message')
    return msg
  } catch (err) {
    if (err instanceof ProtocolError) throw err
    throw new ProtocolError(`malformed frame: ${(err as Error).message}`)
  }
}

export function syncStep1Message(doc: Y.Doc): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, MessageType.Sync)
  syncProtocol.writeSyncStep1(e, doc)
  return encoding.toUint8Array(e)
}

export function syncStep2Message(doc: Y.Doc, stateVector: Uint8Array): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, MessageType.Sync)
  syncProtocol.writeSyncStep2(e, doc, stateVector)
  return encoding.toUint8Array(e)
}

/** A sync step 2 carrying `update` as it is (no encode of a doc). */
export function syncStep2Frame(update: Uint8Array): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, MessageType.Sync)
  encoding.writeVarUint(e, syncProtocol.messageYjsSyncStep2)
  encoding.writeVarUint8Array(e, update)
  return encoding.toUint8Array(e)
}

/** A state vector with no clients (a client that holds nothing yet): one varuint 0. */
export const isEmptyStateVector = (stateVector: Uint8Array): boolean => stateVector.length === 1 && stateVector[0] === 0

export function updateMessage(update: Uint8Array): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, MessageType.Sync)
  syncProtocol.writeUpdate(e, update)
  return encoding.toUint8Array(e)
}

export function awarenessMessage(awarenessUpdate: Uint8Array): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, MessageType.Awareness)
  encoding.writeVarUint8Array(e, awarenessUpdate)
  return encoding.toUint8Array(e)
}

/** A client's update decoded once, for every check the edge's ingest makes of it. */
export interface DecodedUpdate {
  structs: ReturnType<typeof Y.decodeUpdate>['structs']
  ds: ReturnType<typeof Y.decodeUpdate>['ds']
  meta: UpdateMeta
}

/**
 * Decodes a Yjs update; throws ProtocolError on bytes that are no Yjs v1 update and
 * MalformedUpdateError when an item of it could not integrate alike everywhere (runtime/yjs-items.ts).
 */
export function decodeClientUpdate(update: Uint8Array): DecodedUpdate {
  let decoded: ReturnType<typeof Y.decodeUpdate>
  try {
    decoded = Y.decodeUpdate(update)
  } catch (err) {
    throw new ProtocolError(`not a Yjs update: ${(err as Error).message}`)
  }
  const malformed = malformedItem(decoded.structs)
  if (malformed) throw new MalformedUpdateError(`malformed update: ${malformed}`)
  return { ...decoded, meta: metaOf(decoded.structs) }
}

/** What Y.parseUpdateMeta reads, from structs already decoded (it decodes them again, at twice decodeUpdate's cost). */
function metaOf(structs: DecodedUpdate['structs']): UpdateMeta {
  const from = new Map<number, number>()
  const to = new Map<number, number>()
  let client: number | null = null
  let end = 0
  for (const s of structs) {
    if (s.id.client !== client) {
      if (client !== null) to.set(client, end)
      client = s.id.client
      from.set(client, s.id.clock)
    }
    end = s.id.clock + s.length
  }
  if (client !== null) to.set(client, end)
  return { from, to }
}

/**
 * Decodes a Yjs update far enough to prove it is one and to see what it touches;
 * throws ProtocolError on bytes that are not a well-formed Yjs v1 update.
 */
export function inspectUpdate(update: Uint8Array): UpdateShape {
  return shapeOf(decodeClientUpdate(update))
}

