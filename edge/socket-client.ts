import type uWS from 'uWebSockets.js'
import { CloseCode, Role, type Claims } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'
import type { EdgeMetrics } from './metrics.ts'
import type { RoomClient } from './room-options.ts'
import type { SavedReceipts } from './saved-receipts.ts'

/** uWS's ws.send result when the frame was not queued at all. */
const SEND_DROPPED = 2

/**
 * A uWS socket as a room client; sends after close are dropped, not thrown. Invariant: a client
 * either gets every frame the room sends it, in order, or is closed (4508 when it stopped
 * reading) and resyncs by state vector on reconnect: never a silent gap. One frame, however
 * large (a big doc's first sync), never makes a client slow; only a backlog past
 * `maxBufferedBytes` on top of the largest frame sent does.
 */
export class SocketClient implements RoomClient {
  readonly claims: Claims
  readonly userId: string
  readonly canEdit: boolean
  /** Set when the socket asked for the saved signal (contracts/saved.ts). */
  receipts: SavedReceipts | null = null
  private open = true
  private largestFrameBytes = 0
  private expiry: NodeJS.Timeout | undefined

  constructor(
    private readonly ws: uWS.WebSocket<unknown>,
    private readonly socket: { tenant: string; docId: string; claims: Claims },
    private readonly maxBufferedBytes: number,
    private readonly metrics: EdgeMetrics,
    private readonly log: Logger,
  ) {
    this.claims = socket.claims
    this.userId = socket.claims.sub
    this.canEdit = socket.claims.role === Role.Editor
  }

  send(frame: Uint8Array): void {
    if (!this.open) return
    this.largestFrameBytes = Math.max(this.largestFrameBytes, frame.byteLength)
    const buffered = this.ws.getBufferedAmount()
    if (buffered > this.maxBufferedBytes + this.largestFrameBytes || this.ws.send(frame, true) === SEND_DROPPED) {
      this.metrics.slowClients.inc({ tenant: this.socket.tenant })
      this.log.warn({ tenant: this.socket.tenant, docId: this.socket.docId, userId: this.userId, bufferedBytes: buffered, limit: this.maxBufferedBytes }, 'client stopped reading; closed so it resyncs')
      this.close(CloseCode.SlowClient, 'send buffer full; reconnect to resync')
    }
  }

  close(code: number, reason: string): void {
    if (!this.open) return
    this.markClosed()
    this.metrics.closes.inc({ code })
    this.ws.end(code, reason.slice(0, 120))
  }

  markClosed(): void {
    this.open = false
    clearTimeout(this.expiry)
  }

  /**
   * Closes the socket with 4401 at `atMs` (its token's exp plus the clock tolerance admission
   * allowed): a stock client stops reconnecting, and the app reconnects with a fresh token.
   */
  expireAt(atMs: number): void {
    this.expiry = setTimeout(() => {
      if (Date.now() < atMs) return this.expireAt(atMs) // a wait beyond the longest timer
      this.metrics.tokenExpiries.inc({ tenant: this.socket.tenant })
      this.log.info({ tenant: this.socket.tenant, docId: this.socket.docId, userId: this.userId }, 'token expired; socket closed with 4401')
      this.close(CloseCode.Unauthorized, 'token expired')
    }, Math.min(Math.max(0, atMs - Date.now()), MAX_TIMER_MS))
  }
}

/** setTimeout's longest delay; longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1
