import { DiscardPolicy, RetentionPolicy, StorageType, type StreamConfig, type StreamSource } from '@nats-io/jetstream'
import { nanos } from '@nats-io/nats-core'
import {
  AGG_MAX_AGE_MS,
  AGG_STREAM,
  CLEAN_MAX_AGE_MS,
  CLEAN_STREAM,
  CLEAN_SUBJECTS,
  DEAD_LETTER_SUBJECTS,
  DLQ_MAX_AGE_MS,
  DLQ_STREAM,
  EDIT_DEDUP_WINDOW_MS,
  EDIT_STREAM_MAX_AGE_MS,
  FEED_DEDUP_WINDOW_MS,
  storedEditSubjects,
  tenantStreamName,
} from '../../contracts/mod.ts'

// The JetStream streams the provisioner (provisioner.ts) creates, and how big they may grow.

/**
 * AGG never discards an edit core has not committed, because it can hold everything its
 * sources can: its byte cap is the tenants' quotas times this factor (each sourced copy
 * carries a Nats-Stream-Source header the tenant's message does not; measured on 2.9.10 for
 * a one-character insert, the smallest edit: AGG stores 1.21× the tenant stream's bytes, 1.04×
 * for 1 KB edits; the Nats-Stream-Source header adds about 45 bytes).
 * Backpressure happens where it is lossless: a full tenant stream (discard new) refuses the
 * publish with a PubAck error and the edge closes the writer with 4507; its client keeps
 * the edit. AGG's cap only guards the service account (NATS-TENANCY pitfall 1).
 *
 * Why not backpressure at AGG (measured on this nats-server 2.9.10, 300 edits through a
 * 64 KiB AGG): with discard new, a sourcing stream stalls at its cap and resumes once space
 * frees — but 1 to 3 edits per run never reached AGG (limits, interest and workqueue
 * retention alike: messages in flight when space frees are stored past the failed one, which
 * is never retried; sourcing into a max_bytes + discard new stream is supported from 2.11,
 * nats-server PR 6491). Interest or workqueue retention would also lose the position of a
 * source on restart once consumed messages are gone. So AGG keeps limits retention and
 * discard old: should its cap ever be reached anyway, the loss is at the front, where core
 * sees it (core/streams.ts findHole) and stops that partition loudly.
 */
export const AGG_BYTES_PER_TENANT_BYTE = 1.5

/** Most of the service account's quota AGG may take (KV buckets and other service streams need the rest). */
export const AGG_SHARE_OF_SERVICE_QUOTA = 0.8

/** Shares of the service account's quota the dead-letter and CLEAN streams may take (AGG takes up to 80%). */
const DLQ_SHARE_OF_SERVICE_QUOTA = 0.02
const CLEAN_SHARE_OF_SERVICE_QUOTA = 0.08

/** AGG's byte cap for these tenant quotas. */
export function aggMaxBytes(tenantQuotas: readonly number[]): number {
  return Math.ceil(tenantQuotas.reduce((a, b) => a + b, 0) * AGG_BYTES_PER_TENANT_BYTE)
}

/** A tenant's edit stream, in its own account. */
export function tenantStreamConfig(tenant: string): Partial<StreamConfig> & { name: string } {
  return {
    name: tenantStreamName(tenant),
    subjects: [storedEditSubjects(tenant)],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    // Never drop an edit core may not have read: a full quota rejects new ones instead.
    discard: DiscardPolicy.New,
    max_age: nanos(EDIT_STREAM_MAX_AGE_MS),
    duplicate_window: nanos(EDIT_DEDUP_WINDOW_MS),
    deny_delete: true,
    deny_purge: true,
    num_replicas: 1,
  }
}

/** AGG, sourcing every tenant stream, capped at `maxBytes` (aggMaxBytes). */
export function aggStreamConfig(sources: StreamSource[], maxBytes: number): Partial<StreamConfig> & { name: string } {
  return {
    name: AGG_STREAM,
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_bytes: maxBytes,
    max_age: nanos(AGG_MAX_AGE_MS),
    duplicate_window: nanos(EDIT_DEDUP_WINDOW_MS),
    num_replicas: 1,
    sources,
  }
}

/** Core's feeds next to AGG: the dead-letter and CLEAN streams, each a share of the service account's `quota` bytes. */
export function feedStreamConfigs(quota: number): (Partial<StreamConfig> & { name: string })[] {
  const feed = { storage: StorageType.File, retention: RetentionPolicy.Limits, discard: DiscardPolicy.Old, duplicate_window: nanos(FEED_DEDUP_WINDOW_MS), num_replicas: 1 }
  return [
    { ...feed, name: DLQ_STREAM, subjects: [DEAD_LETTER_SUBJECTS], max_age: nanos(DLQ_MAX_AGE_MS), max_bytes: Math.floor(quota * DLQ_SHARE_OF_SERVICE_QUOTA) },
    { ...feed, name: CLEAN_STREAM, subjects: [CLEAN_SUBJECTS], max_age: nanos(CLEAN_MAX_AGE_MS), max_bytes: Math.floor(quota * CLEAN_SHARE_OF_SERVICE_QUOTA) },
  ]
}
