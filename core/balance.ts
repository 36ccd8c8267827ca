import type { Logger } from '../runtime/log.ts'
import type { CoreMetrics } from './metrics.ts'

/** The live core processes as one look at PostgreSQL saw them (lease-probe.ts). */
export interface CoreView {
  /** Backend pids of the live cores' lease sessions in this database, ascending. */
  members: number[]
  /** This core's lease session backend. */
  own: number
}

/** A partition this core owns, as the balance sees it (a PartitionWorker). */
export interface OwnedPartition {
  readonly partition: number
  /** Commit what is in hand, give the lease up and wait again. */
  handBack(): void
}

/**
 * This core's fair share of `partitions` among the live cores: each gets floor(P / N), and the
 * first P mod N of them by backend pid one more, so every core computes the same split from the
 * same view and the shares add up to P. A core not in the view yet counts itself last.
 */
export function fairShare(partitions: number, view: CoreView): number {
  const known = view.members.includes(view.own)
  const cores = known ? view.members.length : view.members.length + 1
  const rank = known ? view.members.indexOf(view.own) : cores - 1
  return Math.floor(partitions / cores) + (rank < partitions % cores ? 1 : 0)
}

/**
 * How many partitions this core may own, and which it gives back.
 *
 * Invariants:
 * - A worker takes a free lease only through `reserve()`, which is synchronous, so the owned
 *   plus reserved partitions never exceed the share this core last computed.
 * - Nothing is taken before the first view (the share starts at 0): a core that starts beside
 *   others does not grab every partition and give most of them back a moment later.
 * - A core over its share (a core joined) hands back the surplus, highest partitions first; a
 *   hand-back commits the batch in hand before the lock goes (worker.ts), and the next owner
 *   starts from the committed checkpoint, so per-document order holds across the move.
 * - Views of different cores may disagree for one look; a core then holds one partition too
 *   many or too few until the next look. The leases themselves (lease.ts) are what keep one
 *   owner per partition, whatever the views say.
 */
export class PartitionBalance {
  private share = 0
  private reserved = 0
  private readonly owned = new Set<OwnedPartition>()
  private readonly handingBack = new Set<OwnedPartition>()
  /** Set once this core took an orphan; cleared when the live cores change. */
  private keepOrphans = false
  /** False while this core cannot reach NATS (streamReachable). */
  private reachable = true
  private lastMembers = ''

  constructor(
    private readonly partitions: number,
    private readonly log: Logger,
    private readonly metrics: CoreMetrics,
  ) {}

  /**
   * Room for one more partition; false when this core has its share (the worker waits). `orphaned`:
   * the partition has stayed free for longer than a live core needs to take it (a core counted
   * live that does not take its share, e.g. its probe cannot connect): it is taken over the share
   * rather than left unowned, and nothing is handed back until the live cores change (handing it
   * back would only leave it unowned again).
   */
  reserve(orphaned = false): boolean {
    if (!this.reachable) return false
    if (this.owned.size + this.reserved >= this.share) {
      if (!orphaned) return false
      this.keepOrphans = true
      this.metrics.orphansTaken.inc()
      this.log.warn({ share: this.share, owned: this.owned.size }, 'taking a partition nobody took although this core has its fair share')
    }
    this.reserved++
    return true
  }

  /** Ends a reservation: with the partition now owned, or null when another core had it. */
  settle(owned: OwnedPartition | null): void {
    this.reserved--
    if (!owned) return
    this.owned.add(owned)
    // Reserved just before NATS went away: given back like the others.
    if (!this.reachable) this.handBack(owned)
  }

  /** The partition is owned no more (handed back, its lease lost, or the worker stopped). */
  released(owned: OwnedPartition): void {
    this.owned.delete(owned)
    this.handingBack.delete(owned)
  }

  /**
   * Whether this core reaches NATS. While it does not, it can consume nothing, yet its lease
   * session (PostgreSQL) would keep every partition it owns from the cores that can: it hands
   * them all back and takes none until it reaches NATS again; the others take them as orphans.
   */
  streamReachable(reachable: boolean): void {
    this.reachable = reachable
    if (reachable) return
    this.log.warn({ owned: this.owned.size }, 'NATS away: handing back every partition until it is back')
    for (const owned of this.owned) this.handBack(owned)
  }

  private handBack(owned: OwnedPartition): void {
    if (this.handingBack.has(owned)) return
    this.handingBack.add(owned)
    this.metrics.partitionsHandedBack.inc()
    owned.handBack()
  }

  /** A new look at the live cores: the share follows it, and a surplus is handed back. */
  update(view: CoreView): void {
    const share = fairShare(this.partitions, view)
    if (share !== this.share) this.log.info({ share, liveCores: view.members.length, owned: this.owned.size }, 'fair share of partitions changed')
    this.share = share
    this.metrics.fairShare.set(share)
    this.metrics.liveCores.set(view.members.length)
    const members = view.members.join(',')
    if (members !== this.lastMembers) this.keepOrphans = false
    this.lastMembers = members
    const surplus = this.owned.size - this.handingBack.size - share
    if (surplus <= 0 || this.keepOrphans) return
    const keep = [...this.owned].filter((o) => !this.handingBack.has(o)).sort((a, b) => a.partition - b.partition)
    for (const owned of keep.slice(keep.length - surplus)) this.handBack(owned)
  }
}
