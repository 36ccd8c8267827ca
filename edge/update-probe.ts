import * as Y from 'yjs'
import { misplacedItem, misplacedNeighbours, type UpdateMeta } from '../runtime/yjs-items.ts'
import { findOverlapViolation, type OverlapViolation } from '../runtime/overlap.ts'
import { isAlreadyApplied, lacksDependencies, type UpdateShape } from './update-shape.ts'

/**
 * What trial-applying an update to the probe showed:
 * - applied: it integrated whole (the probe now holds it);
 * - pending: part of it waits for structs or deletes the document has not seen (a gap);
 * - poisoned: Yjs threw while applying it (bytes that decode but cannot apply).
 */
export type Proof = { kind: 'applied' } | { kind: 'pending' } | { kind: 'poisoned'; reason: string }

/** What the probe tells its room, to log and count. */
export interface ProbeHooks {
  /** Something the probe survived: a mirror or a held update that did not apply. */
  fault(what: 'mirror' | 'held-update', err: unknown): void
  /** The probe was built from the room doc (costs one encode and apply of the document). */
  built(): void
}

/**
 * The proving ground of a room: a second Y.Doc on which an update is tried before anything
 * publishes or applies it. Invariant: the probe holds the room doc's integrated content plus
 * the client updates accepted but not acked yet, and never holds pending structs or pending
 * deletes. So when applying an update to the probe throws, that update alone is at fault: no
 * earlier update with missing dependencies can integrate (and throw) under a later innocent
 * one. After a pending or poisoned trial the probe is rebuilt, which drops what the trial left.
 */
export class UpdateProbe {
  /** Built from the room doc when first needed: a room whose clients only read never builds it. */
  private built: Y.Doc | null = null
  private readonly held = new Set<Uint8Array>()

  /**
   * `room` gives the doc the probe mirrors, with everything acked in it (it may merge what
   * waits); call `mirror` with what each of its applies integrates. `roomMayHoldPending` says,
   * without merging what waits, whether that doc holds (or its load may bring) pending structs.
   */
  constructor(
    private readonly room: () => Y.Doc,
    private readonly hooks: ProbeHooks,
    private readonly roomMayHoldPending: () => boolean,
  ) {}

  /** What the probe would hold, without building it: the room doc while nothing is in flight. */
  private get view(): Y.Doc {
    return this.built === null && this.held.size === 0 ? this.room() : this.probe
  }

  private get probe(): Y.Doc {
    if (this.built) return this.built
    this.built = this.fresh()
    this.hooks.built()
    return this.built
  }

  /** Structs of `update` that reuse ids the probe holds with other content (runtime/overlap.ts), or null. */
  overlapViolation(update: Uint8Array): OverlapViolation | null {
    return findOverlapViolation(this.view, update)
  }

  /**
   * Tries `update` (whose `shape` the caller may have inspected already) on the probe. `applied`: the probe keeps it — the caller either holds it
   * (a client update until its ack) or applies it to the room doc right away.
   */
  prove(update: Uint8Array, known: { shape?: UpdateShape | undefined; meta?: UpdateMeta } = {}): Proof {
    // Cheap first: most updates with missing dependencies are seen without applying or building.
    if (known.shape && this.lacks(known.shape)) return { kind: 'pending' }
    const released = this.misplacedRelease(update, known.meta)
    if (released) return { kind: 'poisoned', reason: `malformed update: ${released}` }
    try {
      Y.applyUpdate(this.probe, update)
    } catch (err) {
      this.drop()
      return { kind: 'poisoned', reason: (err as Error).message ?? String(err) }
    }
    if (this.probe.store.pendingStructs === null && this.probe.store.pendingDs === null) {
      const misplaced = misplacedItem(this.probe, known.meta ?? Y.parseUpdateMeta(update))
      if (misplaced === null) return { kind: 'applied' }
      this.drop()
      return { kind: 'poisoned', reason: `malformed update: ${misplaced}` }
    }
    this.drop()
    return { kind: 'pending' }
  }

  /**
   * Why structs the room doc holds pending (core's state carries those of an HTTP post out of
   * order, and the room's clients got them with it) would land misplaced once this update brings
   * the clocks they wait for, or null. The probe leaves them out, so its trial cannot tell; core
   * refuses such an update (core/batch.ts), and a room that took it would hand its clients
   * what core never stores. Tried on a copy of the room doc, only when the update fills a clock
   * they wait for (a pending struct waits only on its own client, whose socket alone sends it).
   */
  private misplacedRelease(update: Uint8Array, meta: UpdateMeta | undefined): string | null {
    // Not room(): merging the acked updates that wait for the doc on every trial would undo their batching.
    if (!this.roomMayHoldPending()) return null
    const pending = this.room().store.pendingStructs
    if (!pending) return null
    const { from, to } = meta ?? Y.parseUpdateMeta(update)
    const fills = [...pending.missing].some(([client, clock]) => (from.get(client) ?? Infinity) <= clock && clock < (to.get(client) ?? 0))
    if (!fills) return null
    const copy = new Y.Doc()
    Y.applyUpdate(copy, Y.encodeStateAsUpdate(this.room()))
    const before = Y.decodeStateVector(Y.encodeStateVector(copy))
    try {
      Y.applyUpdate(copy, update)
    } catch {
      return null // the trial on the probe says why
    }
    const took: UpdateMeta = { from: new Map(), to: new Map() }
    for (const [client, clock] of Y.decodeStateVector(Y.encodeStateVector(copy))) {
      const start = before.get(client) ?? 0
      if (clock > start) (took.from.set(client, start), took.to.set(client, clock))
    }
    const misplaced = misplacedItem(copy, took)
    copy.destroy()
    return misplaced
  }

  /**
   * True when the update carries new structs that continue, with no clock gap, what the probe
   * holds of each of their clients: what a typing client sends. Such an update is no no-op, so
   * it needs no check against what the probe holds already.
   */
  extendsClocks(meta: UpdateMeta): boolean {
    if (meta.from.size === 0) return false
    const { store } = this.view
    for (const [client, first] of meta.from) {
      const state = Y.getState(store, client)
      if (first > state || (meta.to.get(client) ?? 0) <= state) return false
    }
    return true
  }

  /**
   * Why the decoded `structs` of an update would land next to a neighbour of another list, from
   * what the probe holds, or null (runtime/yjs-items.ts misplacedNeighbours): refused untried, so
   * a flood of such frames from many sockets costs no probe rebuild each (the encode and apply of
   * the whole document that a failed trial costs). What this cannot decide, a trial still judges.
   */
  misplaced(structs: Parameters<typeof misplacedNeighbours>[1]): string | null {
    return misplacedNeighbours(this.view, structs)
  }

  /** The clients among `ends` (one past an update's last clock of each) with clocks the probe does not hold: those the update writes under. */
  clientsPast(ends: Iterable<readonly [number, number]>): number[] {
    const { store } = this.view
    const past: number[] = []
    for (const [client, end] of ends) if (end > Y.getState(store, client)) past.push(client)
    return past
  }

  /** True when the update needs structs the probe does not hold (update-shape.ts lacksDependencies). */
  lacks(shape: UpdateShape): boolean {
    return lacksDependencies(shape, this.view)
  }

  /** True when the probe already holds everything in the update: it is in the room doc or on its way there. */
  holdsAll(shape: UpdateShape): boolean {
    return isAlreadyApplied(shape, this.view)
  }

  /** Keeps a proven client update across rebuilds until `release` (its ack or its failure). */
  hold(update: Uint8Array): void {
    this.held.add(update)
  }

  /**
   * Forgets a held update; true when the probe still held it. After a failed publish
   * (`applied === false`) the probe is rebuilt without it, so nothing proven on top of it
   * passes for integrable.
   */
  release(update: Uint8Array, applied: boolean): boolean {
    if (!this.held.delete(update)) return false
    if (!applied) this.drop()
    return true
  }

  /** Applies an integrated change of the room doc; the probe already holds most of them. */
  mirror(update: Uint8Array): boolean {
    if (!this.built) return true // built from the room doc, which holds it
    try {
      Y.applyUpdate(this.probe, update)
      return true
    } catch (err) {
      // The room and a held update disagree about the same ids (forged duplicate ids): start over.
      this.hooks.fault('mirror', err)
      this.drop()
      return false
    }
  }

  destroy(): void {
    this.drop()
    this.held.clear()
  }

  /** Drops the probe (after a trial it must forget, or the room doc's load): built again when next needed. */
  drop(): void {
    this.built?.destroy()
    this.built = null
  }

  private fresh(): Y.Doc {
    const probe = new Y.Doc()
    Y.applyUpdate(probe, integratedState(this.room()))
    for (const update of this.held) {
      try {
        Y.applyUpdate(probe, update)
      } catch (err) {
        // Proven once on top of the same content, so this cannot throw unless the room diverged;
        // the update still reaches the room doc after its ack, guarded there.
        this.hooks.fault('held-update', err)
        this.held.delete(update)
      }
    }
    return probe
  }
}

/**
 * The doc's state without its pending structs and deletes (Y.encodeStateAsUpdate includes them):
 * what the doc has integrated, which is all the probe may hold.
 */
export function integratedState(doc: Y.Doc): Uint8Array {
  const { pendingStructs, pendingDs } = doc.store
  doc.store.pendingStructs = null
  doc.store.pendingDs = null
  try {
    return Y.encodeStateAsUpdate(doc)
  } finally {
    doc.store.pendingStructs = pendingStructs
    doc.store.pendingDs = pendingDs
  }
}
