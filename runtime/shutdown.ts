import type { NatsConnection } from '@nats-io/transport-node'
import type { Logger } from './log.ts'

/** On SIGTERM or SIGINT (once): drain `service` (it stops taking work and flushes), drain NATS, exit 0. */
export function drainOnSignal(name: string, service: { stop(): Promise<void> }, nc: NatsConnection, log: Logger): void {
  let stopping = false
  const shutdown = async (signal: string) => {
    if (stopping) return
    stopping = true
    log.info({ signal }, `${name} draining`)
    try {
      await service.stop()
      await nc.drain()
    } catch (err) {
      log.error({ err }, `${name} did not drain cleanly`)
      process.exit(1)
    }
    log.info(`${name} stopped`)
    process.exit(0)
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'))
  process.on('SIGINT', () => void shutdown('SIGINT'))
}
