import { Counter, Gauge, Histogram, LATENCY_BUCKETS, createRegistry, type Registry } from '../runtime/metrics.ts'

export type EdgeMetrics = ReturnType<typeof createEdgeMetrics>

export function createEdgeMetrics(registry: Registry = createRegistry('edge')) {
  const registers = [registry]
  return {
    registry,
    connections: new Gauge({ name: 'docflow_edge_connections', help: 'Open client sockets', registers }),
    rooms: new Gauge({ name: 'docflow_edge_rooms', help: 'Documents open on this edge', registers }),
    closes: new Counter({ name: 'docflow_edge_closes_total', help: 'Sockets closed by the edge, by close code', labelNames: ['code'], registers }),
    updatesPublished: new Counter({ name: 'docflow_edge_updates_published_total', help: 'Updates acked by JetStream', registers }),
    updatesDuplicate: new Counter({ name: 'docflow_edge_updates_duplicate_total', help: 'Updates JetStream dropped as duplicates of an earlier msg id', registers }),
    publishFailures: new Counter({ name: 'docflow_edge_publish_failures_total', help: 'Updates JetStream did not take after retries', registers }),
    quotaRejections: new Counter({ name: 'docflow_edge_quota_rejections_total', help: 'Updates refused because the tenant storage quota is full', labelNames: ['tenant'], registers }),
    tenantRefusals: new Counter({ name: 'docflow_edge_tenant_refusals_total', help: 'Sockets refused or closed because their tenant is unknown, suspended or removed', registers }),
    publishSeconds: new Histogram({ name: 'docflow_edge_publish_seconds', help: 'Client update received to JetStream ack', buckets: LATENCY_BUCKETS, registers }),
    viewerUpdatesDropped: new Counter({ name: 'docflow_edge_viewer_updates_dropped_total', help: 'Updates sent by viewers, never applied', registers }),
    rejectedFrames: new Counter({ name: 'docflow_edge_rejected_frames_total', help: 'Client frames refused as malformed', labelNames: ['reason'], registers }),
    fanSent: new Counter({ name: 'docflow_edge_fan_sent_total', help: 'Updates and presence sent to other edges', labelNames: ['kind'], registers }),
    fanReceived: new Counter({ name: 'docflow_edge_fan_received_total', help: 'Updates and presence received from other edges', labelNames: ['kind'], registers }),
    roomLoadSeconds: new Histogram({ name: 'docflow_edge_room_load_seconds', help: 'Time to load a document when a room opens', buckets: LATENCY_BUCKETS, registers }),
    roomLoadFailures: new Counter({ name: 'docflow_edge_room_load_failures_total', help: 'Rooms that could not load state', registers }),
    tooBigRejections: new Counter({ name: 'docflow_edge_too_big_rejections_total', help: 'Frames or updates above the size limit; their writer was closed with 4413', labelNames: ['tenant'], registers }),
    slowClients: new Counter({ name: 'docflow_edge_slow_clients_total', help: 'Sockets closed with 4508 because their send buffer passed the limit', labelNames: ['tenant'], registers }),
    admissionFailures: new Counter({ name: 'docflow_edge_admission_failures_total', help: 'Sockets closed with 1013 because authorizing them failed (NATS slow or away)', registers }),
  }
}
