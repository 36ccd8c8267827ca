import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import WebSocket from 'ws'

/** y-websocket frame builders for raw sockets (what a hostile or broken client can send). */
export const frames = {
  step1: (stateVector: Uint8Array) => frame(0, 0, stateVector),
  step2: (update: Uint8Array) => frame(0, 1, update),
  update: (update: Uint8Array) => frame(0, 2, update),
  awareness: (update: Uint8Array) => {
    const e = encoding.createEncoder()
    encoding.writeVarUint(e, 1)
    encoding.writeVarUint8Array(e, update)
    return encoding.toUint8Array(e)
  },
  queryAwareness: () => new Uint8Array([3]),
}

function frame(type: number, sub: number, payload: Uint8Array): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, type)
  encoding.writeVarUint(e, sub)
  encoding.writeVarUint8Array(e, payload)
  return encoding.toUint8Array(e)
}

/**
 * An awareness update in y-protocols' wire form; `state` null removes the client's presence;
 * `json` sends a state's text as given (one JSON.stringify cannot write).
 */
export function awarenessUpdate(entries: ({ clientId: number; clock: number } & ({ state: unknown } | { json: string }))[]): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, entries.length)
  for (const entry of entries) {
    encoding.writeVarUint(e, entry.clientId)
    encoding.writeVarUint(e, entry.clock)
    encoding.writeVarString(e, 'json' in entry ? entry.json : JSON.stringify(entry.state))
  }
  return encoding.toUint8Array(e)
}

export interface Closed {
  code: number
  reason: string
}

/**
 * A raw WebSocket speaking the y-websocket protocol by hand. `mirror` holds every document
 * update the edge sent it, so `ping` can ask for a small diff: the edge answers a sync step 1
 * with exactly one sync step 2, in order — proof it processed every frame sent before.
 */
export class RawSocket {
  /** Updates from the edge that did not apply to the mirror (a corrupted document). */
  readonly mirrorErrors: Error[] = []
  /** Presence frames the edge sent, and the entries they carried. */
  awarenessFrames = 0
  awarenessEntries = 0
  /** The kind of each frame the edge sent, in order. */
  readonly received: ('sync-step1' | 'sync-step2' | 'update' | 'awareness' | 'other')[] = []
  readonly closed: Promise<Closed>
  private readonly ws: WebSocket
  private readonly step2Waiters: ((ok: true) => void)[] = []
  private closeInfo: Closed | null = null
  private lastError: Error | null = null

  private constructor(
    url: string,
    readonly mirror: Y.Doc,
  ) {
    this.ws = new WebSocket(url)
    this.ws.binaryType = 'nodebuffer'
    this.closed = new Promise((resolve) =>
      this.ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() || (this.lastError?.message ?? '') }
        resolve(this.closeInfo)
      }),
    )
    // A refused or reset socket shows up as its close; the error says why (kept in the reason).
    this.ws.on('error', (err) => (this.lastError = err))
    this.ws.on('message', (data: Buffer) => this.onFrame(new Uint8Array(data)))
  }

  /**
   * Opens a socket to `docId` and syncs `mirror` (pass the previous socket's to fetch only
   * what it lacks); rejects if the edge closes it first.
   */
  static async open(edgeUrl: string, docId: string, token: string, mirror = new Y.Doc()): Promise<RawSocket> {
    const socket = new RawSocket(`${edgeUrl}/${encodeURIComponent(docId)}?token=${token}`, mirror)
    const opened = await new Promise<Closed | null>((resolve) => {
      socket.ws.once('open', () => resolve(null))
      void socket.closed.then(resolve)
    })
    const synced = opened ?? (await socket.ping())
    if (synced === 'alive') return socket
    throw new Error(`closed ${opened ? 'before open' : 'while syncing'}: ${synced.code} ${synced.reason}`)
  }

  get isOpen(): boolean {
    return this.closeInfo === null && this.ws.readyState === WebSocket.OPEN
  }

  send(data: Uint8Array): void {
    if (this.isOpen) this.ws.send(data)
  }

  /** Sends a sync step 1; resolves 'alive' with the edge's step 2, or with the close. */
  ping(): Promise<'alive' | Closed> {
    if (this.closeInfo) return Promise.resolve(this.closeInfo)
    const answered = new Promise<'alive'>((resolve) => this.step2Waiters.push(() => resolve('alive')))
    this.ws.send(frames.step1(Y.encodeStateVector(this.mirror)))
    return Promise.race([answered, this.closed])
  }

  close(): void {
    this.ws.close()
  }

  private onFrame(data: Uint8Array): void {
    const d = decoding.createDecoder(data)
    const type = decoding.readVarUint(d)
    if (type === 1) {
      this.awarenessFrames++
      this.awarenessEntries += decoding.readVarUint(decoding.createDecoder(decoding.readVarUint8Array(d)))
    }
    if (type !== 0) return void this.received.push(type === 1 ? 'awareness' : 'other')
    const sub = decoding.readVarUint(d)
    this.received.push(sub === 0 ? 'sync-step1' : sub === 1 ? 'sync-step2' : 'update')
    if (sub === 0) return // the edge's step 1: we never answer (the edge must cope)
    try {
      Y.applyUpdate(this.mirror, decoding.readVarUint8Array(d))
    } catch (err) {
      this.mirrorErrors.push(err as Error)
    }
    if (sub === 1) this.step2Waiters.shift()?.(true)
  }
}

/** The HTTP status an upgrade got, or 101 when it was upgraded. */
export function upgradeStatus(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url)
    ws.once('unexpected-response', (_req, res) => (resolve(res.statusCode ?? 0), ws.terminate()))
    ws.once('open', () => (resolve(101), ws.close()))
    ws.once('error', (err) => reject(err))
  })
}
