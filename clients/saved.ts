import type * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import * as decoding from 'lib0/decoding'
import { READ_ONLY_MESSAGE_TYPE, SAVED_MESSAGE_TYPE, SAVED_QUERY_PARAM } from '../contracts/saved.ts'

export interface SavedStatus {
  /** True when every local edit is committed to PostgreSQL (or needed no commit). */
  saved: boolean
  /** Local edits not known to be durable yet, including those made offline. */
  unsaved: number
  /** The edge said this connection's token is a viewer's: its edits are never saved and stay unsaved. */
  readOnly: boolean
}

type ProviderOptions = NonNullable<ConstructorParameters<typeof WebsocketProvider>[3]>

/** y-protocols' sync message and its step-2 and update sub-types: the frames that carry edits. */
const SYNC = 0
const SYNC_STEP2 = 1
const SYNC_UPDATE = 2

/**
 * A stock y-websocket `WebsocketProvider` that asks DocFlow's edge for the "saved" signal
 * (contracts/saved.ts) and turns it into `saved` / `unsaved` for an editor's status line.
 *
 * How edits map to what the edge counts: the edge settles the update frames a socket sends, in
 * order. Each local edit is carried by the update frame the provider sends for it, or — made
 * offline, or sent on a socket that closed before the edge settled it — by the sync step 2
 * the provider sends on the next connection. Caveat: a step 2 that carries only what the edge
 * holds already (the old socket's edit, in JetStream or on its way there) settles once all of
 * that is in JetStream, possibly shortly before core commits it; it is durable then.
 */
export class SavedProvider {
  readonly provider: WebsocketProvider
  /** Unsettled edits: the socket and frame number that carry each, or null until a frame does. */
  private readonly edits: { socket: number; frame: number | null }[] = []
  private readonly listeners = new Set<(status: SavedStatus) => void>()
  private socket = 0
  private framesSent = 0
  private readOnly = false
  /** The frame number of an update frame sent during the current doc update, for the edit it carries. */
  private carrying: number | null = null

  constructor(serverUrl: string, room: string, doc: Y.Doc, opts: ProviderOptions = {}) {
    const tracker = this
    const Base = opts.WebSocketPolyfill ?? globalThis.WebSocket
    // Counts the frames that carry edits on each socket, in the order the edge receives them.
    const Counting = class extends Base {
      private readonly socketNumber = tracker.newSocket()
      override send(data: Parameters<WebSocket['send']>[0]): void {
        super.send(data)
        if (this.socketNumber === tracker.socket) tracker.sent(data)
      }
    }
    this.provider = new WebsocketProvider(serverUrl, room, doc, { ...opts, params: { ...opts.params, [SAVED_QUERY_PARAM]: '1' }, WebSocketPolyfill: Counting as typeof WebSocket })
    this.provider.messageHandlers[SAVED_MESSAGE_TYPE] = (_encoder, decoder) => this.settled(decoding.readVarUint(decoder))
    this.provider.messageHandlers[READ_ONLY_MESSAGE_TYPE] = () => {
      this.readOnly = true
      this.emit()
    }
    // Registered after the provider's own handler, which sends the edit's frame first.
    doc.on('update', (_update: Uint8Array, origin: unknown) => {
      if (origin === this.provider) return
      this.edits.push({ socket: this.socket, frame: this.carrying })
      this.carrying = null
      this.emit()
    })
  }

  get status(): SavedStatus {
    return { saved: this.edits.length === 0, unsaved: this.edits.length, readOnly: this.readOnly }
  }

  /** Calls `listener` with the status whenever it changes; returns the unsubscribe. */
  onChange(listener: (status: SavedStatus) => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  destroy(): void {
    this.listeners.clear()
    this.provider.destroy()
  }

  private newSocket(): number {
    this.framesSent = 0
    this.readOnly = false // until the new socket's edge says so
    this.carrying = null
    return ++this.socket
  }

  private sent(data: unknown): void {
    if (!(data instanceof Uint8Array || data instanceof ArrayBuffer)) return
    const d = decoding.createDecoder(data instanceof Uint8Array ? data : new Uint8Array(data))
    if (decoding.readVarUint(d) !== SYNC) return
    const sub = decoding.readVarUint(d)
    if (sub !== SYNC_STEP2 && sub !== SYNC_UPDATE) return
    const frame = ++this.framesSent
    if (sub === SYNC_UPDATE) {
      this.carrying = frame
      return
    }
    // A step 2 carries whatever the edge lacks: edits made offline and those of earlier sockets.
    for (const edit of this.edits) {
      if (edit.frame === null || edit.socket !== this.socket) {
        edit.socket = this.socket
        edit.frame = frame
      }
    }
  }

  private settled(through: number): void {
    if (this.readOnly) return // settled as refused: never saved
    const before = this.edits.length
    for (let i = this.edits.length - 1; i >= 0; i--) {
      const edit = this.edits[i]!
      if (edit.socket === this.socket && edit.frame !== null && edit.frame <= through) this.edits.splice(i, 1)
    }
    if (this.edits.length !== before) this.emit()
  }

  private emit(): void {
    const status = this.status
    for (const listener of this.listeners) listener(status)
  }
}
