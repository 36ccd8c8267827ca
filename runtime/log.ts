import { pino, type DestinationStream, type LevelWithSilent, type Logger } from 'pino'

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

// Up to the last @ before the path: a password may hold an unescaped @, ? or #.
const URL_USERINFO = /([a-z][a-z0-9+.-]*:\/\/)([^/\s]*)@/gi
const SECRET_PARAM = /([?&][^=&#\s]*(?:pass|secret|token)[^=&#\s]*=)[^&#\s]*/gi

/**
 * `text` with the credentials of every URL in it replaced by REDACTED: the password of
 * user:password@, a lone user@ (NATS reads it as a token) and password or token query parameters.
 * Works on lists (NATS_URL) and on error messages.
 */
export function hideCredentials(text: string): string {
  return text
    .replace(URL_USERINFO, (_, scheme: string, userinfo: string) => {
      const colon = userinfo.indexOf(':')
      return `${scheme}${colon >= 0 ? userinfo.slice(0, colon + 1) : ''}${REDACTED}@`
    })
    .replace(SECRET_PARAM, `$1${REDACTED}`)
}

/** Levels LOG_LEVEL may name (pino's). */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const satisfies readonly LevelWithSilent[]

/**
 * One JSON logger per process; `service` names which one wrote a line. `level` comes from the
 * process's validated config (pino throws a stack on an unknown one). `destination` defaults to stdout.
 */
export function createLogger(service: string, level: string, destination?: DestinationStream): Logger {
  const options = {
    base: { service },
    level,
    redact: { paths: REDACTED_PATHS, censor: REDACTED },
    serializers: { url: redactUrl, path: redactUrl },
  }
  return destination ? pino(options, destination) : pino(options)
}
