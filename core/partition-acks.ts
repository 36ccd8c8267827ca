import type { JsMsg } from '@nats-io/jetstream'

/** Acks of a partition go out at most this often (each covers every delivery before it). */
const ACK_INTERVAL_MS = 100

/**
 * The acks of a partition's consumer (ack policy all): one per ACK_INTERVAL_MS at most, for the
 * last delivery of the committed contiguous run. Deliveries past a missing one stay unacked. An
 * ack only frees the consumer's window: a session always restarts from the checkpoint in
 * PostgreSQL, so an ack that never went out loses nothing.
 */
export class PartitionAcks {
  /** Committed messages not acked yet because an earlier delivery is missing. */
  private readonly unacked = new Map<number, JsMsg>()
  /** The newest committed delivery of the contiguous run, acked at the next tick. */
  private due: JsMsg | null = null
  private timer: NodeJS.Timeout | null = null

  /** `msgs` are committed; every delivery up to `contiguousThrough` is. */
  committed(msgs: readonly JsMsg[], contiguousThrough: number): void {
    for (const m of msgs) if (m.info.deliverySequence > contiguousThrough) this.unacked.set(m.info.deliverySequence, m)
    let last: JsMsg | undefined
    for (const m of msgs) if (m.info.deliverySequence === contiguousThrough) last = m
    for (const [delivery, m] of this.unacked) {
      if (delivery > contiguousThrough) continue
      if (delivery === contiguousThrough) last = m
      this.unacked.delete(delivery)
    }
    if (!last) return
    this.due = last
    this.timer ??= setTimeout(() => this.flush(), ACK_INTERVAL_MS)
  }

  /** Sends the due ack now. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
    const due = this.due
    this.due = null
    due?.ack()
  }

  /** The session ended: its deliveries are gone with it (the next restarts from the checkpoint). */
  endSession(): void {
    this.flush()
    this.unacked.clear()
  }
}
