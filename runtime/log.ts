import { pino, type Logger } from 'pino'

export type { Logger }

/** One JSON logger per process; `service` names which one wrote a line. */
export function createLogger(service: string, level = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({ base: { service }, level })
}
