import {
  SERVICE_ACCOUNT,
  ServiceUser,
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
 * What a tenant's `app` user may not do: write edits around the edge, or change, purge or
 * delete its own stream (only provisioning's `admin` user may).
 */
const APP_USER_DENIED = [
  'ten.>',
  '$JS.API.STREAM.CREATE.>',
  '$JS.API.STREAM.UPDATE.>',
  '$JS.API.STREAM.DELETE.>',
  '$JS.API.STREAM.PURGE.>',
  '$JS.API.STREAM.MSG.DELETE.>',
  '$JS.API.STREAM.RESTORE.>',
]

const q = (s: string) => JSON.stringify(s)

/**
 * nats-server configuration with an account per tenant and the service account, generated from
 * the registry (2.9-compatible; production's operator-mode setup lives in helm/). Never edit
 * the output by hand: `npm run tenant` regenerates it and reloads the server.
 */
export function renderNatsConfig(o: NatsConfigOptions, registry: Readonly<RegistryFile>): string {
  const tenants = Object.entries(registry.tenants).sort(([a], [b]) => a.localeCompare(b))
  const serviceUsers = Object.values(ServiceUser).map((u) => `      { user: ${q(u)}, password: ${q(registry.service[u])} }`)
  const imports = tenants.flatMap(([t, entry]) => [
    // A suspended tenant keeps its data but loses the ingest path: nothing can write for it.
    ...(entry.status === TenantStatus.Active ? [`      { service: { account: ${q(t)}, subject: ${q(tenantEditSubjects(t))} } }`] : []),
    `      { service: { account: ${q(t)}, subject: ${q(`$JS.API.CONSUMER.CREATE.${tenantStreamName(t)}`)} }, to: ${q(`${tenantSourceApi(t)}.CONSUMER.CREATE.${tenantStreamName(t)}`)} }`,
    `      { service: { account: ${q(t)}, subject: ${q(`$JS.FC.${tenantStreamName(t)}.>`)} } }`,
    `      { stream: { account: ${q(t)}, subject: ${q(`${tenantSourceDeliver(t)}.>`)} } }`,
  ])
  const tenantAccounts = tenants.map(([t, entry]) => {
    const [from, to] = partitionMapping(t)
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
