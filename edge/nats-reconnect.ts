import type { NatsConnection } from '@nats-io/transport-node'
import type { Logger } from '../runtime/log.ts'

type Listener = () => void

const listeners = new WeakMap<NatsConnection, Set<Listener>>()

/**
 * Calls `listener` each time `nc` reconnects to a server. Core NATS drops whatever was
 * published while the connection was down, so a room uses this to resync from core. One
 * status watch per connection, however many rooms listen; returns the unsubscribe.
 */
export function onReconnect(nc: NatsConnection, log: Logger, listener: Listener): () => void {
  let set = listeners.get(nc)
  if (!set) {
    const created = new Set<Listener>()
    set = created
    listeners.set(nc, created)
    void watch(nc, created, log).catch((err: unknown) => log.error({ err }, 'NATS status watch ended; rooms will not resync on reconnect'))
  }
  set.add(listener)
  const own = set
  return () => void own.delete(listener)
}

async function watch(nc: NatsConnection, set: Set<Listener>, log: Logger): Promise<void> {
  for await (const status of nc.status()) {
    if (status.type !== 'reconnect') continue
    for (const listener of [...set]) {
      try {
        listener()
      } catch (err) {
        log.error({ err }, 'reconnect listener failed')
      }
    }
  }
}
