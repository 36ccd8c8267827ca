import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import { ProtocolError } from './protocol.ts'
import { TokenBucket } from './token-bucket.ts'

/** Presence limits per socket. */
export interface AwarenessLimits {
  /** Largest awareness frame payload a socket may send; above it the socket is closed with 4413. Default 16_384. */
  maxAwarenessBytes: number
  /** Awareness frames a socket may send per second, sustained; frames over it are dropped and counted. Default 30. */
  awarenessPerSecond: number
  /** Awareness frames a socket may send in a burst before the rate applies. Default 60. */
  awarenessBurst: number
}

export const AWARENESS_DEFAULTS: AwarenessLimits = { maxAwarenessBytes: 16_384, awarenessPerSecond: 30, awarenessBurst: 60 }

/** One client's presence entry of an awareness update (y-protocols' wire form). */
interface AwarenessEntry {
  clientId: number
  clock: number
  state: string
}

/** A peer edge owns the ids whose presence it fanned out to us. */
export const PEER = Symbol('peer edge')
type Owner<S> = S | typeof PEER

/** What is left of an awareness update after the ownership check. */
export interface Admitted {
  /** The entries this owner may apply, re-encoded; null when none is left. */
  update: Uint8Array | null
  /** Their client ids. */
  ids: number[]
  /** Entries refused because another socket or a peer edge owns their client id. */
  refused: number
}

/**
 * Who may speak for which awareness client id, and how fast. Invariant: a presence entry is
 * applied only by the owner of its client id — the socket that introduced it (first seen from
 * that socket) or, for ids first seen in a peer's fan-out, the peer edges. An owner keeps its
 * ids until it leaves (a socket) or their state is removed (a peer), so nobody else can
 * overwrite or remove another client's presence. Over-rate frames are dropped, not closed: the
 * stock client renews its state every 15 s, which repairs a dropped last frame.
 */
export class AwarenessGuard<S> {
  private readonly owners = new Map<number, Owner<S>>()
  private readonly buckets = new Map<S, TokenBucket>()

  constructor(readonly limits: AwarenessLimits) {}

  /** True when `socket` may send one more frame now (token bucket). */
  takeToken(socket: S, now = performance.now()): boolean {
    let bucket = this.buckets.get(socket)
    if (!bucket) this.buckets.set(socket, (bucket = new TokenBucket(this.limits.awarenessPerSecond, this.limits.awarenessBurst, now)))
    return bucket.take(1, now)
  }

  /** Filters an update to the entries `owner` may apply, claiming ids nobody owns yet. Throws ProtocolError on malformed bytes. */
  admit(owner: Owner<S>, update: Uint8Array): Admitted {
    const entries = decodeAwareness(update)
    const kept = entries.filter((e) => {
      const current = this.owners.get(e.clientId)
      if (current !== undefined && current !== owner) return false
      this.owners.set(e.clientId, owner)
      return true
    })
    const refused = entries.length - kept.length
    const ids = kept.map((e) => e.clientId)
    if (kept.length === 0) return { update: null, ids, refused }
    return { update: refused === 0 ? update : encodeAwareness(kept), ids, refused }
  }

  /** The ids a socket owned, now free; the caller removes their states. */
  release(socket: S): number[] {
    this.buckets.delete(socket)
    const ids: number[] = []
    for (const [id, owner] of this.owners) {
      if (owner !== socket) continue
      this.owners.delete(id)
      ids.push(id)
    }
    return ids
  }

  /** States removed (a peer's client left, or timed out): a peer's ids become free again. */
  removed(ids: number[]): void {
    for (const id of ids) if (this.owners.get(id) === PEER) this.owners.delete(id)
  }
}

function decodeAwareness(update: Uint8Array): AwarenessEntry[] {
  try {
    const d = decoding.createDecoder(update)
    const count = decoding.readVarUint(d)
    const entries: AwarenessEntry[] = []
    for (let i = 0; i < count; i++) {
      const entry = { clientId: decoding.readVarUint(d), clock: decoding.readVarUint(d), state: decoding.readVarString(d) }
      JSON.parse(entry.state) // applyAwarenessUpdate would throw half-way through on bad JSON
      entries.push(entry)
    }
    if (decoding.hasContent(d)) throw new ProtocolError('trailing bytes after awareness update')
    return entries
  } catch (err) {
    if (err instanceof ProtocolError) throw err
    throw new ProtocolError(`malformed awareness update: ${(err as Error).message}`)
  }
}

function encodeAwareness(entries: AwarenessEntry[]): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, entries.length)
  for (const entry of entries) {
    encoding.writeVarUint(e, entry.clientId)
    encoding.writeVarUint(e, entry.clock)
    encoding.writeVarString(e, entry.state)
  }
  return encoding.toUint8Array(e)
}
