/**
 * What a room does with its clients' updates (edge/room.ts): each is decoded, checked against
 * the probe (edge/update-probe.ts) and the ids other live sockets or users own (edge/client-owners.ts), and
 * published only when it integrated whole. Invariant: what the room publishes always applies.
 */
import { CloseCode, Limit } from '../contracts/mod.ts'
import { describeOverlap } from '../runtime/overlap.ts'
import { shapeOf } from './update-shape.ts'
import { MalformedUpdateError, decodeClientUpdate, syncStep1Message, type DecodedUpdate } from './protocol.ts'
import type { PublishedRef } from './publish-lanes.ts'
import type { RoomDoc } from './room-doc.ts'
import { ClientOwners } from './client-owners.ts'
import { writtenEnds } from '../runtime/yjs-items.ts'
import type { RoomClient, RoomOptions } from './room-options.ts'

/** Least time between two sync step 1s asking one client to resync (Member.resyncAskedAt). */
const RESYNC_ASK_INTERVAL_MS = 1_000

/** Per-socket state a room keeps. */
export interface Member {
  /**
   * When we last sent this client a sync step 1 after dropping its update (0: none since one
   * applied). Asked again at most every RESYNC_ASK_INTERVAL_MS while its updates keep being
   * dropped: its answer can be dropped too (a client id a lingering socket of it still holds).
   */
  resyncAskedAt: number
  /** One of its updates passed the clock check and still missed dependencies: inspect each whole from now on. */
  inspectAll: boolean
}

export type RoomIngestOptions = Pick<RoomOptions, 'tenant' | 'docId' | 'log' | 'metrics' | 'overLimit' | 'poisoned' | 'publish'>

/** What the ingest needs of its room. */
export interface RoomIngestHandlers {
  /** True when `bytes` more would take the document past its size limit. */
  wouldPassSizeLimit(bytes: number): boolean
  /** The published update is stored in JetStream. */
  acked(client: RoomClient, update: Uint8Array): void
  /** The published update could not be stored. */
  publishFailed(client: RoomClient, update: Uint8Array, err: unknown): void
}

/** The publish of a client update, or what became of it (RoomIngest.take). */
export type IngestOutcome = Promise<PublishedRef> | 'held' | 'dropped' | 'settled' | 'closed'

/** Takes a room's client updates: refuses what must not be published, publishes the rest. */
export class RoomIngest {
  /** Client updates published and not yet stored in JetStream (the probe holds them already). */
  readonly inFlight = new Set<Promise<PublishedRef>>()
  private readonly owners = new ClientOwners<RoomClient>()

  constructor(
    private readonly opts: RoomIngestOptions,
    private readonly doc: RoomDoc,
    private readonly handlers: RoomIngestHandlers,
  ) {}

  /** Who owns which Yjs client id, as learnt from core, peers and this room's writers (edge/client-owners.ts). */
  get clientOwners(): Pick<ClientOwners<RoomClient>, 'learn' | 'wroteElsewhere' | 'known' | 'foreignTo'> {
    return this.owners
  }

  /** The client left: the client ids it owned are free. */
  release(client: RoomClient): void {
    this.owners.release(client)
  }

  /**
   * Publishes a client update when it is new and applies (`savedNotice`: core is to tell when it
   * is committed). The publish (its stream message id), or what became of the update: `held`
   * (the room has it all, maybe still on its way to JetStream), `dropped` (its sender is asked
   * to sync again), `settled` (a viewer's: never saved, nothing to wait for) or `closed` (its
   * sender is being closed).
   */
  take(client: RoomClient, member: Member | undefined, update: Uint8Array, savedNotice: boolean): IngestOutcome {
    if (!client.canEdit) {
      this.opts.metrics.viewerUpdatesDropped.inc()
      return 'settled'
    }
    // A typing client's update continues its own clocks, so it is no no-op: it skips the check
    // against what the probe holds. Anything else (a sync step 2, deletions only, a gap) is
    // checked, and so is every update of a client one of whose fast updates still went pending.
    // Decoded once for every check below (each Y.parseUpdateMeta would decode it again).
    let decoded: DecodedUpdate
    try {
      decoded = decodeClientUpdate(update)
    } catch (err) {
      if (!(err instanceof MalformedUpdateError)) throw err
      return this.refusePoisoned(client, update, err.message)
    }
    const fast = member !== undefined && !member.inspectAll && this.doc.probe.extendsClocks(decoded.meta)
    // Shaped even when fast: an update that would go pending in the probe (a Skip inside it, an
    // origin past the doc) drops the probe, and rebuilding it costs the whole document.
    const shape = shapeOf(decoded)
    // Against the probe: what is in the room doc, waits for it, or is on its way to the stream.
    if (!fast && this.doc.probe.holdsAll(shape)) {
      this.opts.metrics.updatesAlreadyApplied.inc()
      return 'held'
    }
    if (this.handlers.wouldPassSizeLimit(update.byteLength)) {
      this.opts.overLimit(client, Limit.DocumentBytes)
      return 'closed'
    }
    // Only the clients it writes new clocks for (a Skip writes none): a client's resync resends others' structs.
    const ids = this.owners.check(client, this.doc.probe.clientsPast(writtenEnds(decoded.structs)))
    if (ids === null) {
      // Structs for a client id another live socket, or another user, owns: a forgery (of a
      // live client's next clocks, or of an offline one's), or (two tabs sharing a doc) the
      // owner's own edits not in the room yet. Not published; the sender is asked to sync
      // again, and once the owner's update is in, its reply no longer carries them.
      this.opts.metrics.updatesRejected.inc({ reason: 'foreign-client' })
      this.askResync(client, member)
      return 'dropped'
    }
    // Ids the document holds with other content (a client id reused from another session, a
    // clock gone backwards): Yjs would keep what it holds for them and place what follows by
    // neighbours that mean other items to it, and replicas that apply it in another order can
    // end up differently (fuzz seed 585552572: a reload's array order differed from the live
    // clients'). Refused before anyone gets it. A typing client's update starts at its clock and
    // is not decoded for this (runtime/overlap.ts reads the first client's clock off its header).
    const overlap = this.doc.probe.overlapViolation(update)
    if (overlap) return this.refusePoisoned(client, update, describeOverlap(overlap))
    const misplaced = this.doc.probe.misplaced(decoded.structs)
    if (misplaced) return this.refusePoisoned(client, update, `malformed update: ${misplaced}`)
    const proof = this.doc.probe.prove(update, { shape, meta: decoded.meta })
    if (proof.kind === 'poisoned') return this.refusePoisoned(client, update, proof.reason)
    if (proof.kind === 'pending') {
      if (fast && member) member.inspectAll = true
      // Not published: it would sit pending in core and could later integrate under an innocent
      // update. A stock client sent it before its sync step 2 (or lost its dependencies); asking
      // it to sync again brings the dependencies and this edit in one self-contained update.
      this.opts.metrics.updatesRejected.inc({ reason: 'missing-dependencies' })
      this.askResync(client, member)
      return 'dropped'
    }
    if (member) member.resyncAskedAt = 0
    // A typing update writes one client: its sender's. Several are a resync resending structs the
    // room lacks (its load older than a peer's fan-out): none is claimed for the resender.
    if (ids.length === 1) this.owners.claim(client, ids)
    this.doc.probe.hold(update)
    const published = this.opts.publish(update, client.userId, savedNotice)
    this.inFlight.add(published)
    published
      .then(
        () => {
          this.inFlight.delete(published)
          this.handlers.acked(client, update)
        },
        (err: unknown) => {
          this.inFlight.delete(published)
          this.handlers.publishFailed(client, update, err)
        },
      )
      .catch((err: unknown) => {
        this.opts.metrics.roomApplyFailures.inc({ source: 'ack' })
        this.opts.log.error({ err, tenant: this.opts.tenant, docId: this.opts.docId }, 'handling a publish outcome failed')
      })
    return published
  }

  /** An update that must not be applied (Yjs throws on it, or it is malformed): not published, its sender closed. */
  private refusePoisoned(client: RoomClient, update: Uint8Array, reason: string): 'closed' {
    this.opts.metrics.updatesRejected.inc({ reason: 'poisoned' })
    this.opts.log.warn({ tenant: this.opts.tenant, docId: this.opts.docId, userId: client.userId, reason, bytes: update.byteLength }, 'update does not apply; not published, sender closed')
    client.close(CloseCode.InvalidUpdate, 'update does not apply to the document')
    this.opts.poisoned(client)
    return 'closed'
  }

  /** Asks a client to sync again (a sync step 1), at most every RESYNC_ASK_INTERVAL_MS until one of its updates is taken. */
  private askResync(client: RoomClient, member: Member | undefined): void {
    if (!member || Date.now() - member.resyncAskedAt < RESYNC_ASK_INTERVAL_MS) return
    member.resyncAskedAt = Date.now()
    client.send(syncStep1Message(this.doc.current()))
  }
}
