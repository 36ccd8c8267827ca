import { z } from 'zod'
import { ServiceUser, TenantId, tenantUserName, type TenantUserKind } from './ids.ts'
import { pack, unpack } from './codec.ts'

/**
 * NATS topology (shared/NATS-TENANCY.md): one account per tenant owns its edit stream and its
 * quota; one service account holds the users of edge, core and sinks and an aggregate stream
 * sourcing every tenant stream.
 */
export const SERVICE_ACCOUNT = 'SVC'

/** Stream in SVC that sources every tenant's edit stream; core's partitions read it. */
export const AGG_STREAM = 'AGG'

// ServiceUser and the tenant user names are spelled in ids.ts, where TenantId refuses tenant
// ids whose users would take a service user's name.

/**
 * Reply inboxes of a service user's connections. Each user subscribes only to its own, so one
 * process cannot read another's replies or forge deliveries into them (say, an edge feeding
 * core's AGG pull subscription).
 */
export const serviceInboxPrefix = (user: ServiceUser) => `_INBOX_${user}`

/** A tenant's edit stream, in the tenant's own account. */
export const tenantStreamName = (tenant: string) => `EDITS_${TenantId.parse(tenant)}`

/** Header nats-server puts on a message it sourced into a stream: `<source stream>[:<api hash>] <sequence> …`. */
export const STREAM_SOURCE_HEADER = 'Nats-Stream-Source'

/**
 * True when a message AGG holds came from `tenant`'s own stream (its STREAM_SOURCE_HEADER value).
 * A tenant account's admin can give its stream another tenant's subjects, and AGG sources every
 * message of it: the subject alone does not prove the tenant.
 */
export function sourcedFromTenant(header: string | undefined, tenant: string): boolean {
  const stream = header?.split(' ', 1)[0]?.split(':', 1)[0]
  return stream === tenantStreamName(tenant)
}

/** Users inside a tenant's account: `admin` manages its stream (provisioning only); `app` may read, never edit or delete. */
export const tenantUser = (tenant: string, kind: TenantUserKind) => tenantUserName(TenantId.parse(tenant), kind)

/** Where SVC reaches a tenant's JetStream API and deliveries for sourcing into AGG. */
export const tenantSourceApi = (tenant: string) => `$JS.${TenantId.parse(tenant)}.API`
export const tenantSourceDeliver = (tenant: string) => `dlv.${TenantId.parse(tenant)}`

/** KV bucket (in SVC) holding one TenantRecord per tenant: what edges and core know of tenants. */
export const TENANTS_BUCKET = 'DF_TENANTS'

export const TenantStatus = { Active: 'active', Suspended: 'suspended' } as const
export type TenantStatus = (typeof TenantStatus)[keyof typeof TenantStatus]

export const TenantRecord = z.object({
  tenant: TenantId,
  status: z.enum([TenantStatus.Active, TenantStatus.Suspended]),
  /** JetStream file storage quota of the tenant's account. */
  maxStorageBytes: z.number().int().positive(),
  createdAt: z.string(),
})
export type TenantRecord = z.infer<typeof TenantRecord>
export const encodeTenantRecord = (r: TenantRecord) => pack(r)
export const decodeTenantRecord = (b: Uint8Array) => unpack(TenantRecord, b)

/** Dev only: an edge asks the provisioner to create a tenant it sees for the first time. */
export const TENANT_ENSURE_SUBJECT = 'df.tenants.ensure'
export const TenantEnsureRequest = z.object({ tenant: TenantId })
export const TenantEnsureReply = z.discriminatedUnion('status', [
  z.object({ status: z.literal('ok'), record: TenantRecord }),
  z.object({ status: z.literal('error'), message: z.string() }),
])
export type TenantEnsureReply = z.infer<typeof TenantEnsureReply>
export const encodeEnsureRequest = (m: z.infer<typeof TenantEnsureRequest>) => pack(m)
export const decodeEnsureRequest = (b: Uint8Array) => unpack(TenantEnsureRequest, b)
export const encodeEnsureReply = (m: TenantEnsureReply) => pack(m)
export const decodeEnsureReply = (b: Uint8Array) => unpack(TenantEnsureReply, b)

/** JetStream's err_code when an account's storage quota is exhausted. */
export const JS_ACCOUNT_RESOURCES_EXCEEDED = 10_002
