import type { NatsConnection } from '@nats-io/transport-node'
import { ServiceSubjects, encodeDocNotice, type DocNotice } from '../../contracts/mod.ts'

/** Publishes document notices (deleted, erased) to every edge and core, as the ops CLI does, on an admin connection. */
export const docNotifier = (admin: NatsConnection) => async (notice: DocNotice) => {
  admin.publish(ServiceSubjects.docNotice, encodeDocNotice(notice))
  await admin.flush()
}
