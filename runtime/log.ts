import { pino, type DestinationStream, type Logger } from 'pino'

export type { Logger }

/**
 * A token is a password until it expires: no log line carries one. Fields that could hold one
 * are censored by name, and a `token` query parameter inside a logged `url` or `path` is cut.
 */
export const REDACTED_PATHS = ['token', '*.token', 'authorization', '*.authorization', 'headers.authorization', 'headers.cookie', '*.headers.authorization', '*.headers.cookie']
export const REDACTED = '[redacted]'

const TOKEN_PARAM = /([?&](?:token|access_token)=)[^&#\s]*/gi

/** `url` with the value of any token query parameter replaced by REDACTED. */
export function redactUrl(url: unknown): unknown {
  return typeof url === 'string' ? url.replace(TOKEN_PARAM, `$1${REDACTED}`) : url
}

/** One JSON logger per process; `service` names which one wrote a line. `destination` defaults to stdout. */
export function createLogger(service: string, level = process.env.LOG_LEVEL ?? 'info', destination?: DestinationStream): Logger {
  const options = {
    base: { service },
    level,
    redact: { paths: REDACTED_PATHS, censor: REDACTED },
    serializers: { url: redactUrl, path: redactUrl },
  }
  return destination ? pino(options, destination) : pino(options)
}
