import { createHash } from 'node:crypto'
import { TenantId, docKey, docIdFromKey } from './ids.ts'

/**
 * Edits are split into partitions (DOCFLOW_EDIT_PARTITIONS), so one document always lands in one
 * partition and one core worker sees it in order. The count is fixed when a deployment is first
 * provisioned (the tenant registry and core's database record it): a partition is the unit core
 * processes share, so production wants many (helm: 32), while every edge batches each
 * partition's updates apart, so one machine wants few (fewer, larger stream messages). Changing it later would
 * reshuffle documents across partitions.
 */
export const DEFAULT_EDIT_PARTITIONS = 4
/** Upper bound of DOCFLOW_EDIT_PARTITIONS: one durable consumer and one lease per partition. */
export const MAX_EDIT_PARTITIONS = 256
export const EDIT_PARTITIONS_VAR = 'DOCFLOW_EDIT_PARTITIONS'

/**
 * The partition of a document: FNV-1a (32 bit) of its doc key modulo `partitions` — the hash
 * nats-server's `{{partition(n,1)}}` mapping applies to the same token, so an update published
 * to editIngestSubject and a batch an edge addressed itself (editBatchSubject) land in one
 * partition (test/tenancy/aggregate.test.ts checks it against the server).
 */
export function editPartitionOf(docId: string, partitions: number): number {
  const key = docKey(docId)
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i) // doc keys are ASCII
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h % partitions
}

/** Last token of a batch's subject; never a doc key (docIdFromKey refuses a lowercase escape). */
export const EDIT_BATCH_TOKEN = '~batch'

/**
 * Subject of a batch of updates to documents of one partition (contracts/envelope.ts EditBatch):
 * already in the stored form, so the server's partition mapping leaves it alone.
 */
export function editBatchSubject(tenant: string, partition: number): string {
  return `ten.${TenantId.parse(tenant)}.ed.${partitionToken(partition)}.${EDIT_BATCH_TOKEN}`
}

/** Subject an edge publishes a document update to; the server inserts the partition token. */
export function editIngestSubject(tenant: string, docId: string): string {
  return `ten.${TenantId.parse(tenant)}.ed.${docKey(docId)}`
}

/** The subject an update is stored under once nats-server has mapped it. */
export function editStoredSubject(tenant: string, partition: number, docId: string): string {
  return `ten.${TenantId.parse(tenant)}.ed.${partitionToken(partition)}.${docKey(docId)}`
}

/** Filter of one partition's consumer, across tenants. */
export function editPartitionFilter(partition: number): string {
  return `ten.*.ed.${partitionToken(partition)}.*`
}

/** Subjects of a tenant's edit stream: the stored (partitioned) form. */
export function storedEditSubjects(tenant: string): string {
  return `ten.${TenantId.parse(tenant)}.ed.*.*`
}

/** Stored single-update subjects of one document, any partition (purging a document's raw edits; batches are not covered). */
export function docEditSubjects(tenant: string, docId: string): string {
  return `ten.${TenantId.parse(tenant)}.ed.*.${docKey(docId)}`
}

/** Every edit subject of one tenant (ingest and stored forms). */
export function tenantEditSubjects(tenant: string): string {
  return `ten.${TenantId.parse(tenant)}.ed.>`
}

export interface StoredEditSubject {
  tenant: string
  partition: number
  /** The document of a single update; null for a batch (its updates name their documents). */
  docId: string | null
}

/** Parses a stored edit subject (one update or a batch); throws with the reason on anything else. */
export function parseEditSubject(subject: string): StoredEditSubject {
  const parts = subject.split('.')
  if (parts.length !== 5 || parts[0] !== 'ten' || parts[2] !== 'ed') {
    throw new Error(`not an edit subject: ${subject}`)
  }
  const tenant = TenantId.parse(parts[1])
  const partition = Number(parts[3])
  if (!Number.isInteger(partition) || partition < 0 || partition >= MAX_EDIT_PARTITIONS || parts[3] !== String(partition)) {
    throw new Error(`bad partition token in ${subject}`)
  }
  return { tenant, partition, docId: parts[4] === EDIT_BATCH_TOKEN ? null : docIdFromKey(parts[4]!) }
}

function partitionToken(partition: number): string {
  if (!Number.isInteger(partition) || partition < 0 || partition >= MAX_EDIT_PARTITIONS) {
    throw new Error(`partition out of range 0..${MAX_EDIT_PARTITIONS - 1}: ${partition}`)
  }
  return String(partition)
}

/** The tenant-account mapping by which nats-server adds the partition token (hash of the doc token). */
export function partitionMapping(tenant: string, partitions: number): [from: string, to: string] {
  const t = TenantId.parse(tenant)
  return [`ten.${t}.ed.*`, `ten.${t}.ed.{{partition(${partitions},1)}}.{{wildcard(1)}}`]
}

/** Public HTTP path of update ingest on the edge's port: POST `<this>/<docId>/updates`. */
export const HTTP_INGEST_PATH = '/v1/docs'

/** Core-NATS subjects between edges and core; never stored. */
export const ServiceSubjects = {
  /** Durable (acked) updates and presence of one document, fanned out across edges. */
  fan: (tenant: string, docId: string) => `df.fan.${TenantId.parse(tenant)}.${docKey(docId)}`,
  /** Edges holding a document answer with its state, so a new room starts current. */
  room: (tenant: string, docId: string) => `df.room.${TenantId.parse(tenant)}.${docKey(docId)}`,
  /** Core answers with the materialized state of a document (queue group). */
  coreState: 'df.core.state',
  /** Every edge says it is alive (EdgeBeat) each EDGE_BEAT_MS; the others drop the presence of one gone quiet. */
  edgeBeat: 'df.edges.beat',
  /** Core tells an edge which of its stream messages are committed to PostgreSQL (CommittedNotice; the "saved" signal). */
  committed: (edgeId: string) => `df.committed.${createHash('sha256').update(edgeId).digest('base64url').slice(0, 22)}`,
  /** An edge asks every core (no queue group) which of its messages they committed (CommittedQuery; a notice it missed). */
  committedQuery: 'df.core.committed-query',
  /** A document was deleted, restored or erased (DocNotice, from the ops CLI): edges close its rooms, cores drop it from memory. */
  docNotice: 'df.docs.notice',
} as const

/** How often an edge beats, and after how long without a beat its clients' presence is dropped. */
export const EDGE_BEAT_MS = 1_000
export const EDGE_GONE_AFTER_MS = 3_500

/** Every subject of a family, for NATS permissions (scripts/lib/nats-config.ts). */
export const SubjectPatterns = {
  /** What editIngestSubject builds, any tenant and doc (not the stored, partitioned form). */
  editIngest: 'ten.*.ed.*',
  fan: 'df.fan.>',
  room: 'df.room.>',
  committed: 'df.committed.>',
} as const

export const QueueGroups = {
  coreState: 'core-state',
} as const
