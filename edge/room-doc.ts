import * as Y from 'yjs'
import type { Logger } from '../runtime/log.ts'
import type { EdgeMetrics } from './metrics.ts'
import { decodeClientUpdate, syncStep2Frame, syncStep2Message, updateMessage, type DecodedUpdate } from './protocol.ts'
import { isAlreadyApplied, shapeOf } from './update-shape.ts'
import { UpdateProbe } from './update-probe.ts'

/**
 * Acked client updates wait for the room doc until something reads it (a joining client, a
 * state request, a probe rebuild) or this many gathered; while typing goes on, nobody reads it.
 */
const MAX_UNMERGED_UPDATES = 256
const MAX_UNMERGED_BYTES = 256 * 1024

const EMPTY_STATE_VECTOR = new Uint8Array([0])

/**
 * Updates waiting for the room doc, their bytes packed in one buffer: a room holds up to
 * MAX_UNMERGED_UPDATES of them for seconds, and as separate Uint8Arrays each small update
 * costs ~200 bytes of long-lived heap (measured: 119K of them, 25 MB, in an edge at 1,000
 * typing clients); packed, its own bytes and a number.
 */
class PackedUpdates {
  private bytes = new Uint8Array(0)
  private readonly ends: number[] = []

  get count(): number {
    return this.ends.length
  }

  get byteLength(): number {
    return this.ends.at(-1) ?? 0
  }

  push(update: Uint8Array): void {
    const start = this.byteLength
    const end = start + update.byteLength
    if (end > this.bytes.byteLength) {
      const grown = new Uint8Array(Math.max(1024, end * 2))
      grown.set(this.bytes.subarray(0, start))
      this.bytes = grown
    }
    this.bytes.set(update, start)
    this.ends.push(end)
  }

  /** Every update in push order (views of one buffer), leaving the queue empty. */
  take(): Uint8Array[] {
    const bytes = this.bytes
    const updates = this.ends.map((end, i) => bytes.subarray(i === 0 ? 0 : this.ends[i - 1], end))
    this.bytes = new Uint8Array(0)
    this.ends.length = 0
    return updates
  }
}

export interface RoomDocHooks {
  /** What an apply integrated that the clients may lack: for every client but `origin`. */
  integrated(update: Uint8Array, origin: unknown): void
  /** The room doc threw on an update: it may be half-applied, the room must close. */
  broken(err: unknown, source: string): void
}

/**
 * The document of a room and its probe (edge/update-probe.ts). Invariants:
 * - the doc holds only updates JetStream has acked (the probe also holds those in flight);
 * - an acked client update the probe holds waits in `unmerged` and goes into the doc, merged
 *   with the others, when something next reads the doc (`current()`): the room sends it to the
 *   other clients as it came, so while typing goes on nobody reads the doc and an update costs
 *   one Yjs apply (the probe's), not two and an encode. When the doc holds pending structs, an
 *   update may integrate them: it goes in at once and what integrated is announced.
 */
export class RoomDoc {
  private readonly doc = new Y.Doc()
  readonly probe: UpdateProbe
  private readonly unmerged = new PackedUpdates()
  /** The room's load, applied when the doc is first read. */
  private readonly loading: Uint8Array[] = []
  /** What a client that joins empty is sent (the whole doc), shared by every such client; dropped on each change. */
  private fullStateFrames: Uint8Array[] | null = null

  constructor(
    private readonly hooks: RoomDocHooks,
    private readonly metrics: EdgeMetrics,
    log: Logger,
    context: { tenant: string; docId: string },
  ) {
    this.probe = new UpdateProbe(() => this.current(), {
      fault: (what, err) => {
        metrics.roomApplyFailures.inc({ source: `probe-${what}` })
        log.warn({ err, ...context, what }, 'update probe fault; probe rebuilt')
      },
      built: () => metrics.probeBuilds.inc(),
    }, () => this.loading.length > 0 || this.doc.store.pendingStructs !== null)
  }

  /**
   * The doc with every loaded and acked update in it: the room's load goes in first, then what
   * waits in `unmerged`, in ack order. Not merged first: Y.mergeUpdates keeps other content than
   * applying in order when updates carry the same ids (forged), and the clients and core apply
   * them in order.
   */
  current(): Y.Doc {
    if (this.loading.length > 0) {
      for (const update of this.loading.splice(0)) {
        try {
          Y.applyUpdate(this.doc, update, 'load')
        } catch (err) {
          this.hooks.broken(err, 'load') // the room closes; nothing more goes into this doc
          return this.doc
        }
      }
    }
    if (this.unmerged.count === 0) return this.doc
    const updates = this.unmerged.take()
    const { pendingStructs, pendingDs } = this.doc.store
    if (pendingStructs === null && pendingDs === null) this.applyAnnounced(updates)
    else for (const update of updates) this.apply(update, 'ack', 'ack', { proven: true, announced: true })
    return this.doc
  }

  /**
   * Acked updates that the probe and the clients have, into a doc with nothing pending: in one
   * Yjs transaction (measured: 3 µs an update against 7 µs for one transaction each) and with no
   * update event, since nothing they integrate is news to the probe or the clients — not even
   * structs one of them leaves pending and a later one completes.
   */
  private applyAnnounced(updates: Uint8Array[]): void {
    try {
      this.doc.transact(() => {
        for (const update of updates) Y.applyUpdate(this.doc, update, 'ack')
      }, 'ack')
    } catch (err) {
      this.hooks.broken(err, 'ack')
    } finally {
      this.fullStateFrames = null
    }
  }

  /**
   * A held client update is durable. True: it waits for the doc and the caller sends it to the
   * other clients as it came; false: the probe had lost it (rebuilt after a fault), so it went
   * in at once and what integrated was announced.
   */
  acked(update: Uint8Array, origin: unknown): boolean {
    if (!this.probe.release(update, true)) {
      this.apply(update, origin, 'ack', { proven: false, announced: false })
      return false
    }
    this.waitForDoc(update)
    return true
  }

  /**
   * A durable update from a peer edge. When it integrates whole on the probe and the doc holds
   * nothing pending, it waits for the doc like an acked update (one Yjs apply, not three) and
   * the caller sends it to every client as it came (true); otherwise it goes in at once like
   * core's (false), or, when it does not apply, is skipped (its reason).
   */
  acceptPeer(update: Uint8Array): true | false | string {
    const proof = this.probe.prove(update)
    if (proof.kind === 'poisoned') return proof.reason
    const { pendingStructs, pendingDs } = this.doc.store
    if (proof.kind === 'applied' && pendingStructs === null && pendingDs === null) {
      this.waitForDoc(update)
      return true
    }
    this.applyProven(update, 'fan', proof.kind === 'applied')
    return false
  }

  /** A proven update the probe holds goes to `unmerged` until the doc is read (or too much waits, or the doc holds pending structs). */
  private waitForDoc(update: Uint8Array): void {
    this.unmerged.push(update)
    this.fullStateFrames = null
    const { pendingStructs, pendingDs } = this.doc.store
    if (pendingStructs !== null || pendingDs !== null || this.unmerged.count >= MAX_UNMERGED_UPDATES || this.unmerged.byteLength >= MAX_UNMERGED_BYTES) this.current()
  }

  /**
   * The room's first state (the answers of core and of a room on another edge, before any
   * client is served): it goes into the doc when the doc is first read, with no trial on the
   * probe and no update event (nobody to tell yet). The first answer into an empty doc is what
   * joiners get, as it came: a joiner's sync step 2 goes out before the edge applies it, so the
   * client's decode and the edge's run side by side. (Structs of it that would wait pending in
   * the doc wait in the client too, as they would after an encode.) Core's answer may come as
   * the stored state and an op-log `tail` to apply after it: joiners get the tail first, as an
   * update that waits pending in the client until the state's sync step 2 lets it integrate, so
   * they are synced with the whole document. The probe is built from the doc when first needed,
   * so a room whose clients only read never builds it. An answer that throws breaks the room
   * (its clients retry) rather than open the document without its state.
   */
  load(update: Uint8Array, tail?: Uint8Array): void {
    // Pending structs count: a peer's fan-out that came before the load waits there, and goes in with it.
    const { clients, pendingStructs, pendingDs } = this.doc.store
    const empty = clients.size === 0 && pendingStructs === null && pendingDs === null && this.unmerged.count === 0 && this.loading.length === 0
    this.probe.drop()
    this.loading.push(update, ...(tail ? [tail] : []))
    this.fullStateFrames = empty ? [...(tail ? [updateMessage(tail)] : []), syncStep2Frame(update)] : null
  }

  /**
   * Applies an update that did not come from a client's socket (core, a peer, HTTP ingest):
   * nothing when the doc holds it all already (core's answer to a resync, mostly); else tried on
   * the probe first, so one that does not apply is skipped (its reason returned) instead of
   * breaking the doc. It may leave structs pending in the doc (a gap a resync fills).
   */
  applyTrusted(update: Uint8Array, source: string): string | null {
    let decoded: DecodedUpdate
    try {
      decoded = decodeClientUpdate(update)
    } catch (err) {
      return (err as Error).message
    }
    const shape = shapeOf(decoded)
    if (isAlreadyApplied(shape, this.current())) return null
    const proof = this.probe.prove(update, { shape, meta: decoded.meta })
    if (proof.kind === 'poisoned') return proof.reason
    this.applyProven(update, source, proof.kind === 'applied')
    return null
  }

  /** True when the doc (acked updates only) holds all of `update`: applying it would change nothing. */
  holds(update: Uint8Array): boolean {
    return isAlreadyApplied(shapeOf(decodeClientUpdate(update)), this.current())
  }

  /** An update tried on the probe goes into the doc now, after what waits for it. */
  private applyProven(update: Uint8Array, source: string, proven: boolean): void {
    this.current()
    this.apply(update, source, source, { proven, announced: false })
  }

  /** The whole doc as a sync step 2, encoded once per doc version however many clients join (150 joining a 20 MB doc). */
  fullState(): Uint8Array[] {
    if (!this.fullStateFrames) {
      this.fullStateFrames = [syncStep2Message(this.current(), EMPTY_STATE_VECTOR)]
      this.metrics.fullStateEncodes.inc()
    }
    return this.fullStateFrames
  }

  destroy(): void {
    this.probe.destroy()
    this.doc.destroy()
  }

  /**
   * Last guard before the doc. Everything reaching it was proven on the probe, so a throw means
   * the doc and the probe disagree (pending structs that integrated badly).
   */
  private apply(update: Uint8Array, origin: unknown, source: string, known: { proven: boolean; announced: boolean }): void {
    // A proven update is already in the probe; when the doc holds nothing pending, what it
    // integrates is exactly that update: mirroring it would apply it to the probe twice, and when
    // the clients have it too (announced), nothing needs Yjs to encode what integrated.
    const { pendingStructs, pendingDs } = this.doc.store
    const probeHasIt = known.proven && pendingStructs === null && pendingDs === null
    const onUpdate = (integrated: Uint8Array) => {
      if (!probeHasIt) this.probe.mirror(integrated)
      this.hooks.integrated(integrated, origin)
    }
    const listen = !(probeHasIt && known.announced)
    if (listen) this.doc.on('update', onUpdate)
    try {
      Y.applyUpdate(this.doc, update, origin)
    } catch (err) {
      this.hooks.broken(err, source)
    } finally {
      if (listen) this.doc.off('update', onUpdate)
      this.fullStateFrames = null
    }
  }
}
