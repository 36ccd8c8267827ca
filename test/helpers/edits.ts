import * as Y from 'yjs'
import type { JetStreamClient } from '@nats-io/jetstream'
import { editIngestSubject, editMsgId, encodeEnvelope } from '../../contracts/mod.ts'

/** A Yjs update inserting `text` by a fixed client id (so tests can reason about clocks). */
export function edit(text: string, clientID: number): Uint8Array {
  const doc = new Y.Doc()
  doc.clientID = clientID
  doc.getText('t').insert(0, text)
  return Y.encodeStateAsUpdate(doc)
}

/** Publishes an update the way an edge does (envelope, subject, msg id) and returns the PubAck. */
export function publishEdit(js: JetStreamClient, tenant: string, docId: string, update: Uint8Array, msgID = editMsgId(tenant, docId, update)) {
  const env = encodeEnvelope({ v: 1, tenant, docId, userId: 'u', update, ingestTs: Date.now(), edgeId: 'test' })
  return js.publish(editIngestSubject(tenant, docId), env, { msgID })
}
