import * as Y from 'yjs'
import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import type pg from 'pg'
import { QueueGroups, ServiceSubjects, decodeStateRequest, type StateReply } from '../contracts/mod.ts'
import { respondState } from '../runtime/state-transfer.ts'
import type { Logger } from '../runtime/log.ts'
import type { CoreMetrics } from './metrics.ts'
import { readDocParts, stateAndTail } from './store.ts'
import { ownerPairs, storedOwners } from './client-users.ts'
import type { CachedDoc } from './doc-cache.ts'
import { isDocDeleted } from './deletion.ts'

/**
 * Answers edges asking for a document's state when they open a room: the owning worker's
 * in-memory doc when this process has it (newest), else the committed row; `deleted` for a
 * document an operator deleted (core/deletion.ts), which the edge closes with DocumentDeleted.
 */
export function serveDocState(
  nc: NatsConnection,
  pool: pg.Pool,
  cachedDoc: (tenant: string, docId: string) => CachedDoc | undefined,
  log: Logger,
  metrics: CoreMetrics,
): Subscription {
  return nc.subscribe(ServiceSubjects.coreState, {
    queue: QueueGroups.coreState,
    callback: (err, msg) => {
      if (err) return log.warn({ err }, 'state subscription error')
      answer(msg.data)
        .then((reply) => {
          metrics.stateRequests.inc({ result: reply.status })
          respondState(msg, reply)
        })
        .catch((err: unknown) => log.warn({ err }, 'state reply not sent'))
    },
  })

  async function answer(data: Uint8Array): Promise<StateReply> {
    try {
      const req = decodeStateRequest(data)
      const sv = req.stateVector ?? new Uint8Array([0])
      const cached = cachedDoc(req.tenant, req.docId)
      // Both at once: a cold read is what a user opening the document waits for.
      const [deleted, parts] = await Promise.all([isDocDeleted(pool, req.tenant, req.docId), cached ? null : readDocParts(pool, req.tenant, req.docId)])
      if (deleted) return { status: 'deleted' }
      if (cached) return { status: 'found', update: Y.encodeStateAsUpdate(cached.doc, sv), ...(req.wantsOwners && { owners: ownerPairs(cached.owners) }) }
      if (!parts) return { status: 'missing' }
      const stored = stateAndTail(parts)
      const owners = req.wantsOwners ? ownerPairs(storedOwners(parts)) : undefined
      // A room opening asks with an empty state vector: the answer is the whole state, as stored
      // (diffUpdate would only decode and re-encode it: hundreds of ms for a 100K-update document).
      if (isEmptyStateVector(sv) && (!stored.tail || req.acceptsTail)) return { status: 'found', update: stored.state, ...(stored.tail ? { tail: stored.tail } : {}), ...(owners && { owners }) }
      const state = stored.tail ? Y.mergeUpdates([stored.state, stored.tail]) : stored.state
      return { status: 'found', update: isEmptyStateVector(sv) ? state : Y.diffUpdate(state, sv), ...(owners && { owners }) }
    } catch (err) {
      log.error({ err }, 'state request failed')
      return { status: 'error', message: (err as Error).message }
    }
  }
}

/** The encoding of an empty state vector (no client): a request for everything. */
const isEmptyStateVector = (sv: Uint8Array): boolean => sv.byteLength === 1 && sv[0] === 0
