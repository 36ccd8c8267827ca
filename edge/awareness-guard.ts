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
  /** Presence client ids one socket may introduce (a stock client has one); entries for more are refused and counted. Default 4. */
  awarenessIdsPerSocket: number
}

export const AWARENESS_DEFAULTS: AwarenessLimits = { maxAwarenessBytes: 16_384, awarenessPerSecond: 30, awarenessBurst: 60, awarenessIdsPerSocket: 4 }

/**
 * Deepest nesting of arrays and objects a presence state may have. y-protocols re-encodes states
 * with JSON.stringify, which recurses: a 10 KB state of nested brackets overflows the stack at
 * the room's next flush and takes the edge down. A stock client's state nests ~5 deep.
 */
const MAX_STATE_DEPTH = 32

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
  /** Entries refused because their socket already owns awarenessIdsPerSocket ids. */
  overCap: number
}

/**
 * How long a socket's presence ids stay its user's after it left: a stock client reconnecting
 * (a network blip, a reload keeps no id but a reconnect does) names the same id again, and
 * another user's socket must not take it over meanwhile.
 */
const RESERVED_FOR_USER_MS = 60_000

/**
 * Who may speak for which awareness client id, and how fast. Invariant: a presence entry is
 * applied only by the owner of its client id — the socket that introduced it (first seen from
 * that socket) or, for ids first seen in a peer's fan-out, the peer edges. An owner keeps its
 * ids until it leaves (a socket) or their state is removed (a peer), so nobody else can
 * overwrite or remove another client's presence; a socket's ids then stay its user's for
 * RESERVED_FOR_USER_MS. Over-rate frames are dropped, not closed: the stock client renews its
 * state every 15 s, which repairs a dropped last frame.
 */
export class AwarenessGuard<S extends { readonly userId: string }> {
  private readonly owners = new Map<number, Owner<S>>()
  /** Ids of sockets that left, oldest first: only their user may introduce them again until `untilMs`. */
  private readonly reserved = new Map<number, { userId: string; untilMs: number }>()
  /** The users of peer-owned ids, as their edges said: kept for them too once removed. */
  private readonly peerUsers = new Map<number, string>()
  /** How many ids each socket owns (peers' ids are bounded by their own edges). */
  private readonly owned = new Map<Owner<S>, number>()
  private readonly buckets = new Map<S, TokenBucket>()

  constructor(readonly limits: AwarenessLimits) {}

  /** True when `socket` may send one more frame now (token bucket). */
  takeToken(socket: S, now = performance.now()): boolean {
    let bucket = this.buckets.get(socket)
    if (!bucket) this.buckets.set(socket, (bucket = new TokenBucket(this.limits.awarenessPerSecond, this.limits.awarenessBurst, now)))
    return bucket.take(1, now)
  }

  /** Filters an update to the entries `owner` may apply, claiming ids nobody owns yet. Throws ProtocolError on malformed bytes. */
  admit(owner: Owner<S>, update: Uint8Array, nowMs = Date.now(), peerUsers: [number, string][] = []): Admitted {
    const entries = decodeAwareness(update)
    let refused = 0
    let overCap = 0
    this.expireReservations(nowMs)
    const kept = entries.filter((e) => {
      const current = this.owners.get(e.clientId)
      if (current === owner) return true
      if (current !== undefined) return void refused++
      // Removing an id nobody owns removes nothing; and a stock client relays every removal it
      // hears, which must not claim the id of the client that left (it would refuse its return).
      if (e.state === 'null') return false
      const reservedFor = this.reserved.get(e.clientId)?.userId
      // A peer's may: the client reconnected to another edge (a drain sends it there).
      if (reservedFor !== undefined && owner !== PEER && owner.userId !== reservedFor) return void refused++
      this.reserved.delete(e.clientId)
      if (owner !== PEER) {
        const n = this.owned.get(owner) ?? 0
        if (n >= this.limits.awarenessIdsPerSocket) return void overCap++
        this.owned.set(owner, n + 1)
      }
      this.owners.set(e.clientId, owner)
      return true
    })
    const ids = kept.map((e) => e.clientId)
    if (owner === PEER) for (const [id, userId] of peerUsers) if (this.owners.get(id) === PEER) this.peerUsers.set(id, userId)
    if (kept.length === 0) return { update: null, ids, refused, overCap }
    return { update: kept.length === entries.length ? update : encodeAwareness(kept), ids, refused, overCap }
  }

  /** The ids a socket owned, now free for its user's sockets; the caller removes their states. */
  release(socket: S, nowMs = Date.now()): number[] {
    this.buckets.delete(socket)
    this.owned.delete(socket)
    const ids: number[] = []
    for (const [id, owner] of this.owners) {
      if (owner !== socket) continue
      this.owners.delete(id)
      this.reserved.delete(id)
      this.reserved.set(id, { userId: socket.userId, untilMs: nowMs + RESERVED_FOR_USER_MS })
      ids.push(id)
    }
    return ids
  }

  private expireReservations(nowMs: number): void {
    for (const [id, r] of this.reserved) {
      if (r.untilMs > nowMs) return
      this.reserved.delete(id)
    }
  }

  /** States removed (a peer's client left, or timed out): a peer's ids become free again, for their user's sockets first. */
  removed(ids: number[], nowMs = Date.now()): void {
    for (const id of ids) {
      if (this.owners.get(id) !== PEER) continue
      this.owners.delete(id)
      const userId = this.peerUsers.get(id)
      if (userId === undefined) continue
      this.peerUsers.delete(id)
      this.reserved.delete(id)
      this.reserved.set(id, { userId, untilMs: nowMs + RESERVED_FOR_USER_MS })
    }
  }

  /** The users of those of `ids` that this edge's sockets introduced (and left a moment ago): for the peers. */
  usersOf(ids: Iterable<number>): [number, string][] {
    const users: [number, string][] = []
    for (const clientId of ids) {
      const owner = this.owners.get(clientId)
      const userId = owner !== undefined && owner !== PEER ? owner.userId : owner === undefined ? this.reserved.get(clientId)?.userId : undefined
      if (userId !== undefined) users.push([clientId, userId])
    }
    return users
  }
}

function decodeAwareness(update: Uint8Array): AwarenessEntry[] {
  try {
    const d = decoding.createDecoder(update)
    const count = decoding.readVarUint(d)
    const entries: AwarenessEntry[] = []
    for (let i = 0; i < count; i++) {
      const entry = { clientId: decoding.readVarUint(d), clock: decoding.readVarUint(d), state: decoding.readVarString(d) }
      // applyAwarenessUpdate would throw half-way through on bad JSON.
      if (!nestsWithin(JSON.parse(entry.state), MAX_STATE_DEPTH)) throw new ProtocolError(`presence state nested deeper than ${MAX_STATE_DEPTH}`)
      entries.push(entry)
    }
    if (decoding.hasContent(d)) throw new ProtocolError('trailing bytes after awareness update')
    return entries
  } catch (err) {
    if (err instanceof ProtocolError) throw err
    throw new ProtocolError(`malformed awareness update: ${(err as Error).message}`)
  }
}

/** True when no array or object in `value` sits `max` or more levels down (walked without recursion). */
function nestsWithin(value: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[value, 0]]
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!
    if (v === null || typeof v !== 'object') continue
    if (depth >= max) return false
    for (const child of Object.values(v)) stack.push([child, depth + 1])
  }
  return true
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
