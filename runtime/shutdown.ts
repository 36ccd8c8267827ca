import type { NatsConnection } from '@nats-io/transport-node'
import type { Logger } from './log.ts'

/** What drainOnSignal stops. */
export interface Stoppable {
  /** Stops taking work, flushes what it holds, closes. */
  stop(): Promise<void>
  /** What stop() left undone, by name, for the log line of a stop that missed its deadline. */
  unfinished?(): Record<string, number>
}

/**
 * On SIGTERM or SIGINT (once): stop `service`, drain NATS, exit 0 (1 when either throws).
 * With `deadlineMs`, whatever still runs then is abandoned: NATS is closed without flushing
 * and the process exits 1, logging what was left. Without a deadline a frozen nats-server,
 * which never answers the drain's flush, holds the process until the orchestrator's SIGKILL.
 * 1, not 0: the stop did not finish, and supervisors should show it as they do a failed one.
 */
export function drainOnSignal(name: string, service: Stoppable, nc: NatsConnection, log: Logger, deadlineMs?: number): void {
  let phase: 'stop' | 'NATS drain' | null = null
  const abandon = () => {
    log.error({ deadlineMs, phase, ...service.unfinished?.() }, `${name} not stopped within ${deadlineMs} ms: ${phase} abandoned, NATS connection closed without flushing`)
    nc.close()
      .catch((err: unknown) => log.warn({ err }, 'closing the NATS connection failed'))
      .finally(() => process.exit(1))
  }
  const shutdown = async (signal: string) => {
    if (phase) return
    phase = 'stop'
    log.info({ signal }, `${name} draining`)
    if (deadlineMs !== undefined) setTimeout(abandon, deadlineMs)
    try {
      await service.stop()
      phase = 'NATS drain'
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
