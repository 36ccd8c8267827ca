import { Counter, Gauge, Histogram, LATENCY_BUCKETS, createRegistry, type Registry } from '../runtime/metrics.ts'

export type EdgeMetrics = ReturnType<typeof createEdgeMetrics>

export function createEdgeMetrics(registry: Registry = createRegistry('edge')) {
  const registers = [registry]
  return {
    registry,
    connections: new Gauge({ name: 'docflow_edge_connections', help: 'Open client sockets', registers }),
    rooms: new Gauge({ name: 'docflow_edge_rooms', help: 'Documents open on this edge', registers }),
    httpIngests: new Counter({ name: 'docflow_edge_http_ingests_total', help: 'POSTed updates by tenant (empty before the token is checked) and HTTP status', labelNames: ['tenant', 'status'], registers }),
    revokedSockets: new Counter({ name: 'docflow_edge_revoked_sockets_total', help: 'Sockets closed with 4401 because their token was revoked, by tenant', labelNames: ['tenant'], registers }),
    tokenExpiries: new Counter({ name: 'docflow_edge_token_expiries_total', help: 'Sockets closed with 4401 because their token expired, by tenant', labelNames: ['tenant'], registers }),
    closes: new Counter({ name: 'docflow_edge_closes_total', help: 'Sockets closed by the edge, by close code', labelNames: ['code'], registers }),
    updatesPublished: new Counter({ name: 'docflow_edge_updates_published_total', help: 'Updates acked by JetStream', registers }),
    updatesDuplicate: new Counter({ name: 'docflow_edge_updates_duplicate_total', help: 'Updates JetStream dropped as duplicates of an earlier msg id', registers }),
    publishFailures: new Counter({ name: 'docflow_edge_publish_failures_total', help: 'Updates JetStream did not take after retries', registers }),
    quotaRejections: new Counter({ name: 'docflow_edge_quota_rejections_total', help: 'Updates refused because the tenant storage quota is full', labelNames: ['tenant'], registers }),
    tenantRefusals: new Counter({ name: 'docflow_edge_tenant_refusals_total', help: 'Sockets refused or closed because their tenant is unknown, suspended or removed', registers }),
    publishBatchUpdates: new Histogram({ name: 'docflow_edge_publish_batch_updates', help: 'Updates per published stream message (one batch)', buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096], registers }),
    publishRetries: new Counter({ name: 'docflow_edge_publish_retries_total', help: 'Batches resent (same msg id) after no ack in time or no responders', registers }),
    publishSeconds: new Histogram({ name: 'docflow_edge_publish_seconds', help: 'Client update received to JetStream ack', buckets: LATENCY_BUCKETS, registers }),
    viewerUpdatesDropped: new Counter({ name: 'docflow_edge_viewer_updates_dropped_total', help: 'Updates sent by viewers, never applied', registers }),
    rejectedFrames: new Counter({ name: 'docflow_edge_rejected_frames_total', help: 'Client frames refused as malformed', labelNames: ['reason'], registers }),
    fanSent: new Counter({ name: 'docflow_edge_fan_sent_total', help: 'Updates and presence sent to other edges', labelNames: ['kind'], registers }),
    fanReceived: new Counter({ name: 'docflow_edge_fan_received_total', help: 'Updates and presence received from other edges', labelNames: ['kind'], registers }),
    fullStateEncodes: new Counter({ name: 'docflow_edge_full_state_encodes_total', help: 'Whole-document sync replies encoded for clients joining empty (one per document version, shared by every such client)', registers }),
    roomLoadSeconds: new Histogram({ name: 'docflow_edge_room_load_seconds', help: 'Time to load a document when a room opens', buckets: LATENCY_BUCKETS, registers }),
    roomLoadFailures: new Counter({ name: 'docflow_edge_room_load_failures_total', help: 'Rooms that could not load state', registers }),
    framesCut: new Counter({ name: 'docflow_edge_frames_cut_total', help: 'Sockets uWS closed (1006) because a message passed its read bound (the connection byte burst, limits.ts connectionBurstBytes) before it was read, by tenant (empty before the token is checked)', labelNames: ['tenant'], registers }),
    tooBigRejections: new Counter({ name: 'docflow_edge_too_big_rejections_total', help: 'Frames or updates above the size limit; their writer was closed with 4413', labelNames: ['tenant'], registers }),
    limitRefusals: new Counter({ name: 'docflow_edge_limit_refusals_total', help: 'Sockets, upgrades and HTTP ingest requests refused by an admission limit (contracts/limits.ts), by tenant (empty before the token is checked) and limit', labelNames: ['tenant', 'limit'], registers }),
    savedNoticesRecovered: new Counter({ name: 'docflow_edge_saved_notices_recovered_total', help: 'Committed notices this edge missed (core NATS, e.g. during a reconnect) and got by asking the cores again', registers }),
    savedUnconfirmed: new Counter({ name: 'docflow_edge_saved_unconfirmed_total', help: 'Updates of sockets asking for the saved signal whose commit notice never came (the client stays unsaved for them)', registers }),
    slowClients: new Counter({ name: 'docflow_edge_slow_clients_total', help: 'Sockets closed with 4508 because their send buffer passed the limit', labelNames: ['tenant'], registers }),
    admissionFailures: new Counter({ name: 'docflow_edge_admission_failures_total', help: 'Sockets closed with 1013 because authorizing them failed (NATS slow or away)', registers }),
    updatesRejected: new Counter({ name: 'docflow_edge_updates_rejected_total', help: 'Client updates not published: poisoned (sender closed with 4422), missing-dependencies or foreign-client (structs of a client id another live socket owns; sender asked to resync)', labelNames: ['reason'], registers }),
    updatesAlreadyApplied: new Counter({ name: 'docflow_edge_updates_already_applied_total', help: 'Client updates not published because the room already has every struct and delete in them (resyncs)', registers }),
    roomApplyFailures: new Counter({ name: 'docflow_edge_room_apply_failures_total', help: 'Updates from a peer, core or an ack that did not apply to a room (skipped, or the room failed with 1013)', labelNames: ['source'], registers }),
    probeBuilds: new Counter({ name: 'docflow_edge_probe_builds_total', help: 'Update probes built from their room doc, each an encode and an apply of the document: at the first edit after a room loaded, and after a rejected trial or a fault', registers }),
    fanGaps: new Counter({ name: 'docflow_edge_fan_gaps_total', help: 'Fanned-out updates missed from a peer edge (sequence gap); the room refetched from core', registers }),
    roomResyncs: new Counter({ name: 'docflow_edge_room_resyncs_total', help: 'Room state refetched from core, by reason', labelNames: ['reason'], registers }),
    awarenessRefused: new Counter({ name: 'docflow_edge_awareness_refused_total', help: 'Presence frames or entries not applied: rate (frame over the per-socket rate), not-owner (client id owned by another socket or a peer edge) or ids-per-socket (past the ids one socket may introduce)', labelNames: ['reason'], registers }),
  }
}
