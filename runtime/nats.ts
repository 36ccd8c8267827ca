import { connect, type NatsConnection } from '@nats-io/transport-node'
import type { Logger } from './log.ts'

export interface NatsOptions {
  /** Comma-separated server URLs. */
  servers: string
  user?: string | undefined
  pass?: string | undefined
  /** Connection name shown by nats-server monitoring. */
  name: string
}

/** Connects with endless reconnects and logs connection status changes. */
export async function connectNats(opts: NatsOptions, log: Logger): Promise<NatsConnection> {
  const nc = await connect({
    servers: opts.servers.split(','),
    name: opts.name,
    user: opts.user,
    pass: opts.pass,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    noEcho: true,
  })
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect' || s.type === 'reconnect' || s.type === 'error') log.warn({ nats: s.type, server: 'server' in s ? s.server : undefined }, 'nats connection status')
    }
  })()
  return nc
}
