import type { CommittedNotice } from '../contracts/mod.ts'
import type { BatchFeeds } from './batch.ts'
import type { DocCacheBudget } from './doc-cache.ts'
import type { CompactedState } from './snapshots.ts'
import type { PartitionConsumer } from './streams.ts'

/** What a partition worker (worker.ts) is given: its partition, its limits, and what it tells after each commit. */
export interface WorkerOptions extends PartitionConsumer {
  partition: number
  /** Partitions of the deployment: an update whose document hashes elsewhere is a dead letter. */
  editPartitions: number
  /** Most messages committed in one transaction. Default 512. */
  maxBatch: number
  /** A document's state is rewritten once this many ops gathered in the op log since the last. Default 256. */
  compactEveryOps: number
  /** A document whose oldest uncompacted op is this old has its state written, new ops or not (doc-cache.ts). Default 60_000. */
  compactAfterMs?: number
  /** The process's doc caches' shared byte limit (doc-cache.ts). Default: DEFAULT_DOC_CACHE_BYTES for this worker alone. */
  docCacheBudget?: DocCacheBudget
  /** Documents kept in memory by this worker (the batch in hand may pin more). Default 2_000. */
  maxDocs: number
  /** An update ingested this long after its event time counts as late. Default 60_000. */
  lateAfterMs?: number
  /** How often leases held elsewhere are looked at (lease-probe.ts). Default 2_000. */
  leaseRetryMs: number
  /** Wait after a failure before resuming from the checkpoint. Default 1_000. */
  retryDelayMs: number
  /** How long a missing delivery may hold the checkpoint back before the session restarts. Default ackWaitMs. */
  deliveryGapMs?: number
  /** True for an update ingested before its document's erasure (core/erasure-watch.ts): dropped. Default: none is. */
  erasedAfter?: (tenant: string, docId: string, ingestTs: number) => boolean
  /** After a commit that wrote document states: those states, for snapshots (snapshots.ts). */
  onCompacted?: (states: CompactedState[]) => void
  /** After each commit: the committed messages' Nats-Msg-Ids by the edge that published them (the "saved" signal). */
  onCommitted?: (noticesByEdge: Map<string, CommittedNotice>) => void
  /** After each commit: its dead letters, cleaned events and documents' pending state (core's feeds, batch.ts BatchFeeds). */
  onFeeds?: (feeds: BatchFeeds) => void
}
