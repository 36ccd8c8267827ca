import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import { DocEvent, ServiceSubjects, decodeDocNotice, type DocNotice } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'

/**
 * Calls `gone` for every document an operator deleted or erased (ServiceSubjects.docNotice,
 * from the ops CLI), so core drops its in-memory copy: a worker holding an erased document
 * would otherwise write it back at its next compaction. Restores need nothing (the document
 * loads from PostgreSQL as before).
 */
export function watchDocNotices(nc: NatsConnection, log: Logger, gone: (notice: DocNotice) => void): Subscription {
  return nc.subscribe(ServiceSubjects.docNotice, {
    callback: (err, msg) => {
      if (err) return log.warn({ err }, 'document notice subscription failed')
      try {
        const notice = decodeDocNotice(msg.data)
        if (notice.event !== DocEvent.Restored) gone(notice)
      } catch (err) {
        log.warn({ err }, 'bad document notice ignored')
      }
    },
  })
}
