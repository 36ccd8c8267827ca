import * as encoding from 'lib0/encoding'
import { SAVED_MESSAGE_TYPE } from '../contracts/mod.ts'
import type { CommitWatch } from './commit-watch.ts'
import type { PublishedRef } from './publish-lanes.ts'

/** The fate of one update frame of an opted-in socket (contracts/saved.ts). */
export interface Receipt {
  /** Nothing to wait for: a viewer's frame, never published. */
  settle(): void
  /**
   * Published: settled once core committed it — with the frames dropped before it when it is a
   * sync step 2 (`resync`: the client's answer to the edge's ask, carrying all they held); refused
   * by core, its socket is told; a failed publish never settles.
   */
  published(publish: Promise<PublishedRef>, resync: boolean): void
  /**
   * The room held all of it already, maybe still on its way: settled (with the dropped frames
   * when a sync step 2) once `inFlight` (the room's publishes not yet stored) are in JetStream.
   * When one failed, settled if `stillHeld()` (the room doc has it all anyway), else waiting like
   * a dropped frame (stillHeld asked the client to sync again).
   */
  held(inFlight: Promise<unknown>[], resync: boolean, stillHeld: () => boolean): void
  /** Not published, its sender asked to sync again: settled with the socket's next sync step 2 that is committed or held. */
  dropped(): void
}

/**
 * The update frames of one socket that asked for the "saved" signal, numbered in the order it
 * sent them. Invariant: the count sent to the client only grows, and covers frame n only once
 * every frame up to n is settled — so "all saved" on the client means each of its edits is in
 * PostgreSQL, or in JetStream when the room held it already (clients/saved.ts), or needed no
 * commit. Frames settled together are told in one message.
 */
export class SavedReceipts {
  private sent = 0
  private settledThrough = 0
  private readonly settledAhead = new Set<number>()
  /** Dropped frames waiting for the socket's next sync step 2. */
  private dropped: number[] = []
  private told = 0
  private flushing = false

  constructor(
    private readonly send: (frame: Uint8Array) => void,
    private readonly commits: CommitWatch,
    /** Core dead-lettered one of the socket's edits: it never counts as saved, and the socket is closed. */
    private readonly refused: () => void,
  ) {}

  open(): Receipt {
    const n = ++this.sent
    return {
      settle: () => this.settle(n),
      published: (publish, resync) => {
        const frames = this.withDropped(n, resync)
        publish.then(
          (ref) => this.commits.watch(ref.msgId, (refused) => (refused.has(ref.item) ? this.refused() : frames.forEach((f) => this.settle(f)))),
          () => {}, // the room closes the socket (or every socket) on a failed publish
        )
      },
      held: (inFlight, resync, stillHeld) => {
        const frames = this.withDropped(n, resync)
        void Promise.allSettled(inFlight)
          .then((outcomes) => outcomes.every((o) => o.status === 'fulfilled') || stillHeld())
          .catch(() => false) // the room could not tell: waits like a dropped frame
          .then((held) => (held ? frames.forEach((f) => this.settle(f)) : this.dropped.push(...frames)))
      },
      dropped: () => this.dropped.push(n),
    }
  }

  /**
   * Frame `n`, and the dropped frames waiting when it is a sync step 2: only the client's answer
   * to the edge's ask carries what they held. Any other frame (a keystroke typed meanwhile, a
   * delete) says nothing of them.
   */
  private withDropped(n: number, resync: boolean): number[] {
    if (!resync) return [n]
    const frames = [...this.dropped, n]
    this.dropped = []
    return frames
  }

  private settle(n: number): void {
    this.settledAhead.add(n)
    while (this.settledAhead.delete(this.settledThrough + 1)) this.settledThrough++
    if (this.settledThrough === this.told || this.flushing) return
    this.flushing = true
    queueMicrotask(() => {
      this.flushing = false
      if (this.settledThrough === this.told) return
      this.told = this.settledThrough
      const e = encoding.createEncoder()
      encoding.writeVarUint(e, SAVED_MESSAGE_TYPE)
      encoding.writeVarUint(e, this.told)
      this.send(encoding.toUint8Array(e))
    })
  }
}
