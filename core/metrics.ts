import { Counter, Gauge, Histogram, LATENCY_BUCKETS, createRegistry, type Registry } from '../runtime/metrics.ts'

export type CoreMetrics = ReturnType<typeof createCoreMetrics>

export function createCoreMetrics(registry: Registry = createRegistry('core')) {
  const registers = [registry]
  return {
    registry,
    leasesHeld: new Gauge({ name: 'docflow_core_leases_held', help: 'Partitions this process owns', registers }),
    fairShare: new Gauge({ name: 'docflow_core_fair_share', help: 'Partitions this process should own given the live cores (balance.ts)', registers }),
    liveCores: new Gauge({ name: 'docflow_core_live_cores', help: 'Core processes with a live lease session, as this process last saw them', registers }),
    orphansTaken: new Counter({ name: 'docflow_core_orphan_partitions_taken_total', help: 'Partitions this process took over its fair share because they stayed free longer than the lease TTL (a core counted live did not take its share)', registers }),
    partitionsHandedBack: new Counter({ name: 'docflow_core_partitions_handed_back_total', help: 'Partitions this process gave back because it owned more than its fair share (a core joined)', registers }),
    batches: new Counter({ name: 'docflow_core_batches_total', help: 'Batches committed to PostgreSQL', registers }),
    batchSize: new Histogram({ name: 'docflow_core_batch_messages', help: 'Messages per committed batch', buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], registers }),
    updates: new Counter({ name: 'docflow_core_updates_total', help: 'Stream messages by outcome', labelNames: ['outcome'], registers }),
    readStateMerges: new Counter({ name: 'docflow_core_read_state_merges_total', help: 'GET /state of documents with an op-log tail: merged (tail merged into the state) or cached (the same parts merged before)', labelNames: ['outcome'], registers }),
    docRebuilds: new Counter({ name: 'docflow_core_doc_rebuilds_total', help: 'Documents reloaded from PostgreSQL after an update was refused once applied (Yjs threw, a version regression, a misplaced item): each costs a read and an apply of the whole document', labelNames: ['tenant'], registers }),
    deadLetters: new Counter({ name: 'docflow_core_dead_letters_total', help: 'Updates dead-lettered, by reason class and tenant (unknown: the message did not decode that far)', labelNames: ['reason', 'tenant'], registers }),
    duplicateUpdates: new Counter({ name: 'docflow_core_duplicate_updates_total', help: 'Updates whose (clientID, clock) ranges were all applied already (retries), dropped', labelNames: ['tenant'], registers }),
    sequenceGaps: new Counter({ name: 'docflow_core_sequence_gaps_total', help: 'Documents reported with pending updates that did not fill within CORE_GAP_REPORT_AFTER_MS', labelNames: ['tenant'], registers }),
    docsWithSequenceGaps: new Gauge({ name: 'docflow_core_docs_with_sequence_gaps', help: 'Documents in memory here with a reported, still unfilled sequence gap', labelNames: ['tenant'], registers }),
    feedPublishFailures: new Counter({ name: 'docflow_core_feed_publish_failures_total', help: 'Feed messages (dead-letter, CLEAN stream) not published: gave up after retries, or dropped from a full queue', labelNames: ['stream', 'cause'], registers }),
    commitSeconds: new Histogram({ name: 'docflow_core_commit_seconds', help: 'Time from handing a batch to the group commit until it is committed', buckets: LATENCY_BUCKETS, registers }),
    ageCompactions: new Counter({ name: 'docflow_core_age_compactions_total', help: 'Document states written because their oldest uncompacted op passed CORE_COMPACT_AFTER_MS with no new op to carry them', registers }),
    docCacheBytes: new Gauge({ name: 'docflow_core_doc_cache_bytes', help: 'Estimated bytes of the documents the partition workers hold in memory (limit CORE_DOC_CACHE_MB)', registers }),
    docCacheEvictions: new Counter({ name: 'docflow_core_doc_cache_evictions_total', help: 'Documents dropped from memory to stay under CORE_MAX_DOCS or CORE_DOC_CACHE_MB', registers }),
    snapshotsPruned: new Counter({ name: 'docflow_core_snapshots_pruned_total', help: 'Snapshots past CORE_SNAPSHOT_RETENTION_DAYS: deleted, blob-failed (row gone, blob left) or failed (round)', labelNames: ['outcome'], registers }),
    docsForgotten: new Counter({ name: 'docflow_core_docs_forgotten_total', help: 'Document notices (deleted, erased) that made this core drop a document from memory', labelNames: ['event'], registers }),
    compactions: new Counter({ name: 'docflow_core_compactions_total', help: 'Document states rewritten (a new document, or enough ops gathered since the last state)', registers }),
    lateUpdates: new Counter({ name: 'docflow_core_late_updates_total', help: 'Updates committed whose edge ingest came more than CORE_LATE_AFTER_MS after the client made them (offline edits synced later)', labelNames: ['tenant'], registers }),
    ingestToCommitSeconds: new Histogram({ name: 'docflow_core_ingest_to_commit_seconds', help: 'Edge ingest to PostgreSQL commit, per update', buckets: LATENCY_BUCKETS, registers }),
    leaseTakeovers: new Counter({ name: 'docflow_core_lease_takeovers_total', help: 'Stale lease sessions (holder stopped renewing) this core ended to take their partition', registers }),
    leasesLost: new Counter({ name: 'docflow_core_leases_lost_total', help: 'Leases this core lost (session ended or not confirmed in time); it stops committing', registers }),
    leaseProbeErrors: new Counter({ name: 'docflow_core_lease_probe_errors_total', help: 'Failed looks at the leases this core waits for', registers }),
    deliveryGaps: new Counter({ name: 'docflow_core_delivery_gaps_total', help: 'Consumer sessions restarted from the checkpoint because a delivery went missing', registers }),
    workerErrors: new Counter({ name: 'docflow_core_worker_errors_total', help: 'Partition worker failures (it resets to its checkpoint)', labelNames: ['partition'], registers }),
    aggUsageRatio: new Gauge({ name: 'docflow_core_agg_usage_ratio', help: 'Bytes in the aggregate stream over its byte cap (sized to hold all its sources; alerts are on lag)', registers }),
    consumerPending: new Gauge({ name: 'docflow_core_consumer_pending', help: 'Messages not yet committed by an owned partition', labelNames: ['partition'], registers }),
    consumerOldestPendingSeconds: new Gauge({ name: 'docflow_core_consumer_oldest_pending_seconds', help: 'Age of the oldest message an owned partition has not committed (0 when caught up)', labelNames: ['partition'], registers }),
    streamHoles: new Counter({ name: 'docflow_core_stream_holes_total', help: 'Consumer restarts refused because the stream lost messages the partition had not committed', labelNames: ['partition'], registers }),
    partitionBlocked: new Gauge({ name: 'docflow_core_partition_blocked', help: '1 while a partition refuses to continue past a hole in the stream', labelNames: ['partition'], registers }),
    stateRequests: new Counter({ name: 'docflow_core_state_requests_total', help: 'Document state requests from edges, by result', labelNames: ['result'], registers }),
    committedNoticeFailures: new Counter({ name: 'docflow_core_committed_notice_failures_total', help: 'Committed notices to edges (the saved signal) that could not be sent', registers }),
    snapshots: new Counter({ name: 'docflow_core_snapshots_total', help: 'Document snapshots to the blob store: written, skipped (queue full), unkeyable (its id encodes too long for a blob key: none taken), failed, forgotten (its document deleted or erased while it was written: taken back), or untagged (its predecessor not tagged superseded for the S3 lifecycle rule)', labelNames: ['outcome'], registers }),
    snapshotBytes: new Counter({ name: 'docflow_core_snapshot_bytes_total', help: 'Bytes of document snapshots written to the blob store', registers }),
    readRequests: new Counter({ name: 'docflow_core_read_requests_total', help: 'Read API requests by status', labelNames: ['status'], registers }),
  }
}
