import {
  AGG_STREAM,
  CLEAN_SUBJECTS,
  DEAD_LETTER_SUBJECTS,
  EDIT_BATCH_TOKEN,
  SERVICE_ACCOUNT,
  ServiceSubjects,
  ServiceUser,
  serviceInboxPrefix,
  SubjectPatterns,
  TENANTS_BUCKET,
  REVOCATIONS_BUCKET,
  TENANT_ENSURE_SUBJECT,
  TenantStatus,
  partitionMapping,
  tenantEditSubjects,
  tenantSourceApi,
  tenantSourceDeliver,
  tenantStreamName,
  tenantUser,
} from '../../contracts/mod.ts'
import type { RegistryFile } from './registry.ts'

export interface NatsConfigOptions {
  port: number
  /** Monitoring (HTTP) port, also used for readiness. */
  monitorPort: number
  storeDir: string
  pidFile: string
  /** JetStream file storage of the whole server. */
  maxFileStore: string
  /** JetStream file quota of the service account (AGG, KV). */
  serviceMaxFileBytes: number
}

/**
 * What a tenant's `app` user may not do: write edits around the edge, change, purge or delete
 * its own stream (only provisioning's `admin` user may), or manage consumers: AGG's source
 * consumer lives in the tenant's account, and deleting it, or taking every consumer slot so it
 * cannot be made again, would stop the tenant's edits reaching core without an error.
 * The app still reads: stream info, messages by sequence, live edits by subscription.
 */
const APP_USER_DENIED = [
  'ten.>',
  '$JS.API.STREAM.CREATE.>',
  '$JS.API.STREAM.UPDATE.>',
  '$JS.API.STREAM.DELETE.>',
  '$JS.API.STREAM.PURGE.>',
  '$JS.API.STREAM.MSG.DELETE.>',
  '$JS.API.STREAM.RESTORE.>',
  '$JS.API.CONSUMER.CREATE.>',
  '$JS.API.CONSUMER.DURABLE.CREATE.>',
  '$JS.API.CONSUMER.DELETE.>',
  // 2.11+ (production): pause or unpin AGG's source consumer.
  '$JS.API.CONSUMER.PAUSE.>',
  '$JS.API.CONSUMER.UNPIN.>',
]

const q = (s: string) => JSON.stringify(s)

/** Reading a KV bucket: open (stream info), get (direct or message get) and watch (ordered consumer). */
const bucketRead = (bucket: string) => {
  const stream = `KV_${bucket}`
  return [
    `$JS.API.STREAM.INFO.${stream}`,
    `$JS.API.DIRECT.GET.${stream}`,
    `$JS.API.DIRECT.GET.${stream}.>`,
    `$JS.API.STREAM.MSG.GET.${stream}`,
    `$JS.API.CONSUMER.CREATE.${stream}`,
    `$JS.API.CONSUMER.CREATE.${stream}.>`,
    `$JS.API.CONSUMER.INFO.${stream}.*`,
    `$JS.API.CONSUMER.DELETE.${stream}.*`,
    `$JS.FC.${stream}.>`,
  ]
}
const tenantsBucketRead = bucketRead(TENANTS_BUCKET)

/** Replies to a service user's requests (JetStream API, state transfer) arrive on its own inboxes only. */
const inbox = (user: ServiceUser) => `${serviceInboxPrefix(user)}.>`

interface Permissions {
  publish: string[]
  subscribe: string[]
}

/**
 * What each service user may do; anything not listed is refused by nats-server (least
 * privilege: an internet-facing edge cannot delete AGG or a consumer, purge, or write the
 * tenant bucket). Provisioning's `svc-admin` administers and is unrestricted.
 */
const SERVICE_PERMISSIONS: Record<Exclude<ServiceUser, typeof ServiceUser.Admin>, Permissions> = {
  // Publish edits on ingest subjects only (the server adds the partition token: the stored,
  // partitioned form is not writable), fan out and ask peers and core for state.
  [ServiceUser.Edge]: {
    publish: [
      SubjectPatterns.editIngest,
      // Batches of one partition's updates (core checks each update's partition).
      `ten.*.ed.*.${EDIT_BATCH_TOKEN}`,
      SubjectPatterns.fan,
      SubjectPatterns.room,
      ServiceSubjects.edgeBeat,
      ServiceSubjects.coreState,
      ServiceSubjects.committedQuery,
      TENANT_ENSURE_SUBJECT,
      '$JS.API.INFO',
      ...tenantsBucketRead,
      ...bucketRead(REVOCATIONS_BUCKET),
      // Answers to peer edges' room requests.
      inbox(ServiceUser.Edge),
    ],
    subscribe: [SubjectPatterns.fan, SubjectPatterns.room, ServiceSubjects.edgeBeat, SubjectPatterns.committed, ServiceSubjects.docNotice, inbox(ServiceUser.Edge)],
  },
  // Consume AGG (partition consumers: create, delete, info, pull, ack), read the tenant and
  // revocation buckets, and answer edges' state requests.
  [ServiceUser.Core]: {
    publish: [
      '$JS.API.INFO',
      `$JS.API.STREAM.INFO.${AGG_STREAM}`,
      `$JS.API.STREAM.MSG.GET.${AGG_STREAM}`,
      `$JS.API.DIRECT.GET.${AGG_STREAM}`,
      `$JS.API.DIRECT.GET.${AGG_STREAM}.>`,
      `$JS.API.CONSUMER.CREATE.${AGG_STREAM}`,
      `$JS.API.CONSUMER.CREATE.${AGG_STREAM}.>`,
      `$JS.API.CONSUMER.DURABLE.CREATE.${AGG_STREAM}.*`,
      `$JS.API.CONSUMER.DELETE.${AGG_STREAM}.*`,
      `$JS.API.CONSUMER.INFO.${AGG_STREAM}.*`,
      `$JS.API.CONSUMER.NAMES.${AGG_STREAM}`,
      `$JS.API.CONSUMER.LIST.${AGG_STREAM}`,
      `$JS.API.CONSUMER.MSG.NEXT.${AGG_STREAM}.*`,
      `$JS.ACK.${AGG_STREAM}.>`,
      ...tenantsBucketRead,
      // The read API refuses revoked tokens.
      ...bucketRead(REVOCATIONS_BUCKET),
      // Answers to edges' state requests, and which of their messages are committed.
      inbox(ServiceUser.Edge),
      SubjectPatterns.committed,
      // Its feeds (after each commit): dead letters and cleaned events.
      DEAD_LETTER_SUBJECTS,
      CLEAN_SUBJECTS,
    ],
    subscribe: [ServiceSubjects.coreState, ServiceSubjects.committedQuery, ServiceSubjects.docNotice, inbox(ServiceUser.Core)],
  },
  // Read only for now: stream and consumer state, messages by sequence, the tenant bucket.
  [ServiceUser.Sinks]: {
    publish: ['$JS.API.INFO', '$JS.API.STREAM.NAMES', '$JS.API.STREAM.LIST', '$JS.API.STREAM.INFO.*', '$JS.API.STREAM.MSG.GET.*', '$JS.API.DIRECT.GET.>', '$JS.API.CONSUMER.INFO.*.*', ...tenantsBucketRead],
    subscribe: [inbox(ServiceUser.Sinks)],
  },
}

function serviceUser(user: ServiceUser, password: string): string {
  const p = user === ServiceUser.Admin ? undefined : SERVICE_PERMISSIONS[user]
  const permissions = p ? `, permissions: { publish: { allow: [${p.publish.map(q).join(', ')}] }, subscribe: { allow: [${p.subscribe.map(q).join(', ')}] } }` : ''
  return `      { user: ${q(user)}, password: ${q(password)}${permissions} }`
}

/**
 * nats-server configuration with an account per tenant and the service account, generated from
 * the registry (2.9-compatible; production's operator-mode setup lives in helm/). Never edit
 * the output by hand: `npm run tenant` regenerates it and reloads the server.
 */
export function renderNatsConfig(o: NatsConfigOptions, registry: Readonly<RegistryFile>): string {
  const tenants = Object.entries(registry.tenants).sort(([a], [b]) => a.localeCompare(b))
  const serviceUsers = Object.values(ServiceUser).map((u) => serviceUser(u, registry.service[u]))
  const imports = tenants.flatMap(([t, entry]) => [
    // A suspended tenant keeps its data but loses the ingest path: nothing can write for it.
    ...(entry.status === TenantStatus.Active ? [`      { service: { account: ${q(t)}, subject: ${q(tenantEditSubjects(t))} } }`] : []),
    `      { service: { account: ${q(t)}, subject: ${q(`$JS.API.CONSUMER.CREATE.${tenantStreamName(t)}`)} }, to: ${q(`${tenantSourceApi(t)}.CONSUMER.CREATE.${tenantStreamName(t)}`)} }`,
    `      { service: { account: ${q(t)}, subject: ${q(`$JS.FC.${tenantStreamName(t)}.>`)} } }`,
    `      { stream: { account: ${q(t)}, subject: ${q(`${tenantSourceDeliver(t)}.>`)} } }`,
  ])
  const tenantAccounts = tenants.map(([t, entry]) => {
    const [from, to] = partitionMapping(t, registry.editPartitions)
    return `  ${q(t)}: {
    users: [
      { user: ${q(tenantUser(t, 'admin'))}, password: ${q(entry.passwords.admin)} }
      { user: ${q(tenantUser(t, 'app'))}, password: ${q(entry.passwords.app)}, permissions: { publish: { deny: [${APP_USER_DENIED.map(q).join(', ')}] } } }
    ]
    jetstream: { max_mem: 0, max_file: ${entry.maxStorageBytes}, max_streams: 2, max_consumers: 16 }
    mappings: { ${q(from)}: ${q(to)} }
    exports: [
      { service: ${q(tenantEditSubjects(t))}, accounts: [${q(SERVICE_ACCOUNT)}] }
      { service: ${q(`$JS.API.CONSUMER.CREATE.${tenantStreamName(t)}`)}, accounts: [${q(SERVICE_ACCOUNT)}] }
      { service: ${q(`$JS.FC.${tenantStreamName(t)}.>`)}, accounts: [${q(SERVICE_ACCOUNT)}] }
      { stream: ${q(`${tenantSourceDeliver(t)}.>`)}, accounts: [${q(SERVICE_ACCOUNT)}] }
    ]
  }`
  })
  return `# Generated from ${q('accounts.json')} by scripts/lib/nats-config.ts; never edit by hand.
server_name: docflow
listen: 127.0.0.1:${o.port}
http: 127.0.0.1:${o.monitorPort}
pid_file: ${q(o.pidFile)}
max_payload: 8MB
jetstream {
  store_dir: ${q(o.storeDir)}
  max_file_store: ${o.maxFileStore}
  max_memory_store: 256MB
}
accounts {
  ${q(SERVICE_ACCOUNT)}: {
    users: [
${serviceUsers.join('\n')}
    ]
    jetstream: { max_mem: 64MB, max_file: ${o.serviceMaxFileBytes}, max_streams: 16, max_consumers: 512 }
    imports: [
${imports.join('\n')}
    ]
  }
${tenantAccounts.join('\n')}
}
`
}
