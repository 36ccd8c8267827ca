import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import { DocEvent, ServiceSubjects, decodeDocNotice } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'

/**
 * Calls `gone` for every document an operator deleted or erased (ServiceSubjects.docNotice), so
 * the edge closes its room now instead of serving what it holds in memory. Best effort: a room
 * that misses the notice is still refused at its next open or resync (core answers `deleted`).
 */
export function watchDocNotices(nc: NatsConnection, log: Logger, gone: (tenant: string, docId: string) => void): Subscription {
  return nc.subscribe(ServiceSubjects.docNotice, {
    callback: (err, msg) => {
      if (err) return log.warn({ err }, 'document notice subscription failed')
      try {
        const notice = decodeDocNotice(msg.data)
        if (notice.event !== DocEvent.Restored) gone(notice.tenant, notice.docId)
      } catch (err) {
        log.warn({ err }, 'bad document notice ignored')
      }
    },
  })
}
