import type { TokenPolicy } from '../runtime/jwt.ts'
import type { AwarenessLimits } from './awareness-guard.ts'
import { EdgeOptionsError } from './errors.ts'
import type { EdgeLimits } from './limits.ts'

/** How an edge process is configured (edge/main.ts reads it from the environment). */
export interface EdgeOptions {
  /** Listen port; 0 picks a free one. Default 8080. */
  port: number
  /** Listen address. Default 0.0.0.0. */
  host: string
  /** Private ops port serving /metrics and /healthz; 0 picks a free one. Default 9080. */
  opsPort: number
  /** Ops listen address. Default 127.0.0.1. */
  opsHost?: string
  /** Unique per process; fan-out skips its own messages by it. */
  edgeId: string
  /** How client tokens are verified. */
  tokens: TokenPolicy
  /**
   * Largest client frame (so also update) accepted; a larger one closes its writer with 4413.
   * Must leave ENVELOPE_MARGIN_BYTES below the server's max_payload. Default: exactly that.
   */
  maxMessageBytes?: number | undefined
  /** Send backlog (beyond the largest frame sent) after which a client is closed with 4508. Default 4 MiB. */
  maxBufferedBytes?: number | undefined
  /** Wait for core's / peers' state when a room opens. Default 3_000. */
  stateTimeoutMs: number
  /** Second look at core's state after a room opens. Default 1_500. */
  resyncDelayMs: number
  /** JetStream ack timeout per attempt. Default 2_000. */
  publishAckTimeoutMs: number
  /** Partitions of the deployment (DOCFLOW_EDIT_PARTITIONS, as provisioned). Default DEFAULT_EDIT_PARTITIONS. */
  editPartitions?: number | undefined
  /** Publish attempts before the room resyncs its clients. Default 5. */
  publishAttempts: number
  /** Longest an update waits for others to share its stream message (publisher.ts); 0 = next tick. Default 15. */
  publishLingerMs?: number | undefined
  /** Updates that make a lane publish without waiting out publishLingerMs. Default 24. */
  publishBatchTarget?: number | undefined
  /** Below this many updates per second lanes do not linger. Default 500. */
  publishBusyUpdatesPerS?: number | undefined
  /** Most updates per stream message. Default 512. */
  publishMaxBatchUpdates?: number | undefined
  /** Most update bytes per stream message. Default 1 MiB (capped by max_payload). */
  publishMaxBatchBytes?: number | undefined
  /** Dev only: provision a tenant seen for the first time. Default false. */
  autoProvisionTenants: boolean
  /** Presence limits per socket (awareness-guard.ts). Default AWARENESS_DEFAULTS. */
  awareness?: Partial<AwarenessLimits> | undefined
  /** Rate, connection and size limits (edge/limits.ts). Default LIMIT_DEFAULTS. */
  limits?: Partial<EdgeLimits> | undefined
  /**
   * Request header holding the client's address when a proxy or load balancer sits in front
   * (e.g. x-forwarded-for: its last entry, the one our proxy appended, is used). Only set it when every request comes
   * through that proxy, or clients choose their own address. Default: the socket's peer address.
   */
  clientIpHeader?: string | undefined
}

/** Room kept under nats-server's max_payload for the envelope, headers and AGG's source headers. */
export const ENVELOPE_MARGIN_BYTES = 64 * 1024
export const DEFAULT_MAX_BUFFERED_BYTES = 4 * 1024 * 1024

/** The frame limit: the option when it fits the server's max_payload with margin, else a clear error. */
export function messageLimit(maxMessageBytes: number | undefined, maxPayload: number | undefined): number {
  if (maxPayload === undefined) throw new EdgeOptionsError('the NATS connection has no server info (max_payload); connect before constructing the edge')
  const fits = maxPayload - ENVELOPE_MARGIN_BYTES
  if (fits <= 0) throw new EdgeOptionsError(`nats-server max_payload ${maxPayload} leaves no room for updates (${ENVELOPE_MARGIN_BYTES} bytes are kept for the envelope)`)
  if (maxMessageBytes === undefined) return fits
  if (!Number.isInteger(maxMessageBytes) || maxMessageBytes <= 0) throw new EdgeOptionsError(`maxMessageBytes must be a positive integer, got ${maxMessageBytes}`)
  if (maxMessageBytes > fits) {
    throw new EdgeOptionsError(
      `maxMessageBytes ${maxMessageBytes} does not fit nats-server's max_payload ${maxPayload} minus ${ENVELOPE_MARGIN_BYTES} bytes for the envelope; use at most ${fits} (EDGE_MAX_MESSAGE_BYTES) or raise max_payload`,
    )
  }
  return maxMessageBytes
}
