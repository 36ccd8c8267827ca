/**
 * What rooms that closed a moment ago held, for the next room of their document on this edge.
 * Everything in a room is durable in JetStream, but core commits it a little later, and far later
 * while a partition changes owner: a room opening right after another closed (the last writer's
 * tab gone, a reader arriving) would load core's older state and never get the newest edits, no
 * other edge holding them to answer. Kept only after recent writes, and bounded by age and bytes.
 */

/** A closed room's document and the updates acked after it closed, in order; the users of its client ids. */
export interface RoomLeftover {
  updates: Uint8Array[]
  owners: [number, string][]
}

const bytesOf = (l: RoomLeftover) => l.updates.reduce((n, u) => n + u.byteLength, 0)

/** How long a leftover waits for a successor; core is that far behind only in a failover. */
export const LEFTOVER_KEEP_MS = 60_000
/** Bytes of leftovers one edge keeps at most (the oldest go first). */
const MAX_LEFTOVER_BYTES = 64 * 1024 ** 2

export class ClosedRooms {
  /** Oldest first. */
  private readonly leftovers = new Map<string, RoomLeftover & { atMs: number }>()
  private bytes = 0
  /** Documents deleted or erased a moment ago, oldest first, with when they stop counting. */
  private readonly tombstones = new Map<string, number>()

  keep(key: string, leftover: RoomLeftover, nowMs = Date.now()): void {
    this.drop(key)
    this.leftovers.set(key, { ...leftover, atMs: nowMs })
    this.bytes += bytesOf(leftover)
    this.expire(nowMs)
  }

  /** An update of `key`'s closed room acked after it closed (a writer's last keystroke, its tab gone): added to its leftover, if it left one. */
  addLate(key: string, update: Uint8Array, nowMs = Date.now()): void {
    const kept = this.leftovers.get(key)
    if (kept) this.keep(key, { updates: [...kept.updates, update], owners: kept.owners }, nowMs)
  }

  /** The leftover of `key`'s last room, once: its successor loads it beside core's state. */
  take(key: string, nowMs = Date.now()): RoomLeftover | null {
    this.expire(nowMs)
    const leftover = this.leftovers.get(key) ?? null
    this.drop(key)
    return leftover
  }

  /** Forgets leftovers whose key `matches` (a deleted or erased document, a revoked tenant). */
  forget(matches: (key: string) => boolean): void {
    for (const key of [...this.leftovers.keys()]) if (matches(key)) this.drop(key)
  }

  /** `key`'s document was deleted or erased: its leftover goes, and for LEFTOVER_KEEP_MS what its old rooms ack goes to no room (an in-flight edit). */
  deleted(key: string, nowMs = Date.now()): void {
    this.forget((k) => k === key)
    this.expireTombstones(nowMs)
    this.tombstones.delete(key)
    this.tombstones.set(key, nowMs + LEFTOVER_KEEP_MS)
  }

  /** True when `key`'s document was deleted or erased less than LEFTOVER_KEEP_MS ago. */
  deletedLately(key: string, nowMs = Date.now()): boolean {
    this.expireTombstones(nowMs)
    return this.tombstones.has(key)
  }

  private expireTombstones(nowMs: number): void {
    for (const [k, untilMs] of this.tombstones) {
      if (untilMs > nowMs) return
      this.tombstones.delete(k)
    }
  }

  private expire(nowMs: number): void {
    for (const [key, l] of this.leftovers) {
      if (nowMs - l.atMs < LEFTOVER_KEEP_MS && this.bytes <= MAX_LEFTOVER_BYTES) return
      this.drop(key)
    }
  }

  private drop(key: string): void {
    const l = this.leftovers.get(key)
    if (!l) return
    this.leftovers.delete(key)
    this.bytes -= bytesOf(l)
  }
}
