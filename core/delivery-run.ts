/** One delivery of a partition consumer: its delivery (consumer) sequence and stream sequence. */
export interface Delivery {
  delivery: number
  streamSeq: number
}

/**
 * The contiguous run of one consumer session's committed deliveries; the checkpoint advances
 * only over it.
 *
 * Invariant: a session creates its consumer at checkpoint + 1, so its first deliveries come in
 * stream order with delivery sequences 1, 2, 3, ... (a partition's stream sequences are not
 * contiguous — other partitions interleave in AGG — but its delivery sequences are). Once every
 * delivery up to k is committed, every message of the partition up to the highest stream
 * sequence among them is in PostgreSQL, so that sequence is a safe checkpoint. A delivery lost
 * in flight leaves a gap: the checkpoint stops below it until the gap fills or the session is
 * reset from the checkpoint (which delivers the lost message again).
 *
 * nats-server 2.9 gives a redelivery a new delivery sequence, newer servers may keep the first
 * one; either way a delivery below the run's end is ignored and a new one counts like any other.
 */
export class DeliveryRun {
  private next = 1
  private floor: number
  /** Committed deliveries past a gap: delivery sequence → stream sequence. */
  private readonly ahead = new Map<number, number>()
  private gapSinceMs: number | null = null

  constructor(checkpoint: number) {
    this.floor = checkpoint
  }

  /** Every stream sequence of the partition up to this one is committed. */
  get checkpoint(): number {
    return this.floor
  }

  /** The checkpoint once `batch` commits too (nothing is recorded). */
  peek(batch: readonly Delivery[]): number {
    const inBatch = new Map(batch.map((d) => [d.delivery, d.streamSeq]))
    let floor = this.floor
    for (let d = this.next; ; d++) {
      const seq = this.ahead.get(d) ?? inBatch.get(d)
      if (seq === undefined) return floor
      floor = Math.max(floor, seq)
    }
  }

  /** Records a committed batch and returns the new checkpoint. */
  commit(batch: readonly Delivery[], nowMs = Date.now()): number {
    for (const d of batch) if (d.delivery >= this.next) this.ahead.set(d.delivery, d.streamSeq)
    for (let seq = this.ahead.get(this.next); seq !== undefined; seq = this.ahead.get(this.next)) {
      this.ahead.delete(this.next)
      this.floor = Math.max(this.floor, seq)
      this.next++
    }
    if (this.ahead.size === 0) this.gapSinceMs = null
    else this.gapSinceMs ??= nowMs
    return this.floor
  }

  /** The last delivery sequence of the contiguous committed run (0: none yet). */
  get contiguousThrough(): number {
    return this.next - 1
  }

  /** The first delivery sequence missing from the run while later ones are committed, or null. */
  get missing(): number | null {
    return this.ahead.size > 0 ? this.next : null
  }

  /** How long deliveries past a gap have been waiting for it, in ms (0: no gap). */
  gapAgeMs(nowMs = Date.now()): number {
    return this.gapSinceMs === null ? 0 : nowMs - this.gapSinceMs
  }
}
