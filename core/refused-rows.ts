import type pg from 'pg'
import type { Logger } from '../runtime/log.ts'
import { DeadLetterReason } from '../contracts/mod.ts'
import type { DecodedItem } from './batch.ts'
import { itemKey, refusedOps, type OpRow } from './store.ts'

/**
 * A partition's updates whose op-log rows PostgreSQL refuses to store (a constraint, a value out
 * of range), with its reason. Such a row would fail its batch at every retry and stall the
 * partition for every tenant in it: learnt after a refused commit (store.ts refusedOps), each is
 * dead-lettered when the batch comes again (worker.ts).
 */
export class RefusedRows {
  private readonly reasons = new Map<string, string>()

  constructor(
    private readonly db: pg.Pool,
    private readonly log: Logger,
    private readonly partition: number,
  ) {}

  /** The dead letter's reason for this update (stream sequence, item), or undefined. */
  reason(seq: number, item: number): string | undefined {
    return this.reasons.get(itemKey(seq, item))
  }

  /** After a commit: its updates are settled, dead-lettered or stored. */
  settled(decoded: readonly DecodedItem[]): void {
    if (this.reasons.size > 0) for (const d of decoded) this.reasons.delete(itemKey(d.msg.seq, d.item))
  }

  /** After PostgreSQL refused the batch for its data: which of its updates it refuses alone. Never throws. */
  async learn(decoded: readonly DecodedItem[], ops: OpRow[]): Promise<void> {
    try {
      const refused = await refusedOps(this.db, ops)
      for (const [op, reason] of refused) {
        const d = decoded.find((x) => 'msgId' in x && x.msgId === op.msgId && x.msg.seq === op.streamSeq)
        if (d) this.reasons.set(itemKey(d.msg.seq, d.item), `${DeadLetterReason.Refused}: ${reason}`)
      }
      if (refused.size > 0) this.log.error({ partition: this.partition, refused: refused.size }, 'PostgreSQL refuses to store updates of a batch: they are dead-lettered when the batch is retried')
      else this.log.error({ partition: this.partition }, 'PostgreSQL refused a batch but none of its updates alone; retrying it')
    } catch (err) {
      this.log.warn({ err, partition: this.partition }, 'could not learn which updates PostgreSQL refused')
    }
  }
}
