import { connect, type NatsConnection } from '@nats-io/transport-node'
import { JetStreamApiCodes, JetStreamApiError, type ConsumerInfo, type JetStreamManager, type StreamInfo, type StreamInfoRequestOptions } from '@nats-io/jetstream'
import type { Logger } from './log.ts'

export interface NatsOptions {
  /** Comma-separated server URLs. */
  servers: string
  user?: string | undefined
  pass?: string | undefined
  /** Connection name shown by nats-server monitoring. */
  name: string
  /** Prefix of this connection's reply inboxes (contracts' serviceInboxPrefix). Default _INBOX. */
  inboxPrefix?: string | undefined
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
    // Never our own messages back: the edge's fan-out is not echoed to itself, and a room's
    // state request to df.room.* gets "no responders" at once when only its own room listens
    // (test/edge/sync.test.ts), instead of waiting out the state timeout on every open.
    noEcho: true,
    ...(opts.inboxPrefix ? { inboxPrefix: opts.inboxPrefix } : {}),
  })
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect' || s.type === 'reconnect' || s.type === 'error') log.warn({ nats: s.type, server: 'server' in s ? s.server : undefined }, 'nats connection status')
    }
  })()
  return nc
}

/** The inbox prefix a connection was opened with (nats.js keeps its options untyped on the interface). */
export function inboxPrefixOf(nc: NatsConnection): string | undefined {
  return (nc as unknown as { options?: { inboxPrefix?: string } }).options?.inboxPrefix
}

/** True when `err` is a JetStream API error with that err_code. */
export function isJetStreamApiError(err: unknown, code: number): boolean {
  return err instanceof JetStreamApiError && err.code === code
}

/** A stream's info, or null when it does not exist; any other failure throws. */
export async function streamInfo(jsm: JetStreamManager, name: string, opts?: Partial<StreamInfoRequestOptions>): Promise<StreamInfo | null> {
  try {
    return await jsm.streams.info(name, opts)
  } catch (err) {
    if (isJetStreamApiError(err, JetStreamApiCodes.StreamNotFound)) return null
    throw err
  }
}

/** A consumer's info, or null when it does not exist; any other failure throws. */
export async function consumerInfo(jsm: JetStreamManager, stream: string, durable: string): Promise<ConsumerInfo | null> {
  try {
    return await jsm.consumers.info(stream, durable)
  } catch (err) {
    if (isJetStreamApiError(err, JetStreamApiCodes.ConsumerNotFound)) return null
    throw err
  }
}
