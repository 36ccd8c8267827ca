// `npm run tenant -- <command>`: tenants of the running `npm start` stack.
//   add <tenant> [--max-storage 1GB]     account, quota, edit stream, aggregate source
//   quota <tenant> --max-storage 20GB    change the storage quota
//   suspend <tenant> | resume <tenant>   stop / restore writes (data kept)
//   remove <tenant> --yes --actor <who> --reason <why>
//                                        delete everything the tenant has, everywhere (audited)
//   list [--json]                        tenants with their usage
//   revoke <tenant> [--user <id> | --token <jti>] [--reason <text>]
//                                        close and refuse the tokens (all of the tenant's, or
//                                        one user's, issued until now; or one token) on every edge
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Revocation, TenantId, TenantStatus } from '../contracts/mod.ts'
import { BLOB_STORE_VARS, BlobStoreConfig, loadConfig } from '../runtime/config.ts'
import { blobDirOf, openBlobStore, type BlobStore } from '../runtime/blobs/blob-store.ts'
import { dataDirOf } from './lib/data-dir.mjs'
import { natsFiles } from './lib/nats-server.ts'
import type { NatsConfigOptions } from './lib/nats-config.ts'
import { Provisioner } from './lib/provisioner.ts'
import { formatSize, parseSize } from './lib/registry.ts'

const USAGE = `usage: npm run tenant -- add <tenant> [--max-storage 1GB]
       npm run tenant -- quota <tenant> --max-storage <size>
       npm run tenant -- suspend <tenant> | resume <tenant>
       npm run tenant -- remove <tenant> --yes --actor <who> --reason <why>
       npm run tenant -- list [--json]
       npm run tenant -- revoke <tenant> [--user <id> | --token <jti>] [--reason <text>]`

const dataDir = dataDirOf(process.env)

/** `add` without --max-storage. */
const DEFAULT_QUOTA_BYTES = 1024 ** 3
/** A smaller quota holds a handful of edits: a slip (say "10" meant as GB), not a plan. */
const MIN_QUOTA_BYTES = 1024 ** 2
/** Revocation fields by the option that sets them, for error messages. */
const REVOKE_OPTIONS: Record<string, string> = { userId: '--user', tokenId: '--token', reason: '--reason' }

/** One line on stderr; exit 2 when the command line is wrong, 1 when the operation failed. */
function fail(message: string, code = 2): never {
  console.error(`docflow tenant: ${message}${code === 2 ? ' (npm run tenant -- --help)' : ''}`)
  process.exit(code)
}

const { values, positionals } = (() => {
  try {
    return parseArgs({
      allowPositionals: true,
      options: { 'max-storage': { type: 'string' }, user: { type: 'string' }, token: { type: 'string' }, reason: { type: 'string' }, actor: { type: 'string' }, yes: { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    })
  } catch (err) {
    return fail((err as Error).message)
  }
})()
if (values.help) {
  console.log(USAGE)
  process.exit(0)
}
const [command, tenantArg, ...extra] = positionals
if (!command) {
  console.error(USAGE)
  process.exit(2)
}
if (!['add', 'quota', 'suspend', 'resume', 'remove', 'list', 'revoke'].includes(command)) fail(`unknown command ${JSON.stringify(command)}`)
if (extra.length > 0) fail(`unexpected arguments: ${extra.join(' ')}`)
if (command !== 'revoke' && (values.user !== undefined || values.token !== undefined)) fail('--user and --token are for revoke')
if (command !== 'revoke' && command !== 'remove' && values.reason !== undefined) fail('--reason is for revoke and remove')
if (command !== 'remove' && values.actor !== undefined) fail('--actor is for remove')
// The erasures audit row says who asked and why (SOC 2, GDPR), as `docflow doc erase` does.
if (command === 'remove' && (!values.actor?.trim() || !values.reason?.trim())) fail('remove needs --actor <who asked> and --reason <why>: the erasure records both')
if (values.user !== undefined && values.token !== undefined) fail('revoke names a user or a token, not both')
const tenant = command === 'list' ? '' : parseTenant(tenantArg)
if (values['max-storage'] !== undefined && command !== 'add' && command !== 'quota') fail('--max-storage is for add and quota')
if (command === 'quota' && values['max-storage'] === undefined) fail('--max-storage is required')
const maxStorageBytes = values['max-storage'] === undefined ? DEFAULT_QUOTA_BYTES : quota(values['max-storage'])
const revocation = command === 'revoke' ? parseRevocation() : undefined

function parseTenant(name: string | undefined): string {
  if (!name) fail(`${command} needs a tenant name`)
  const parsed = TenantId.safeParse(name)
  if (!parsed.success) fail(`bad tenant name ${JSON.stringify(name)}: ${parsed.error.issues[0]?.message}`)
  return parsed.data
}

function quota(text: string): number {
  let bytes: number
  try {
    bytes = parseSize(text)
  } catch (err) {
    return fail(`--max-storage: ${(err as Error).message}`)
  }
  if (bytes < MIN_QUOTA_BYTES) fail(`--max-storage ${text} is below the smallest quota, ${formatSize(MIN_QUOTA_BYTES)}`)
  return bytes
}

function parseRevocation(): Omit<Revocation, 'revokedAt'> {
  const parsed = Revocation.safeParse({ tenant, userId: values.user, tokenId: values.token, reason: values.reason ?? '', revokedAt: Date.now() })
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    fail(`bad ${REVOKE_OPTIONS[String(issue.path[0])] ?? 'revocation'}: ${issue.message}`)
  }
  const { revokedAt: _, ...r } = parsed.data
  return r
}

const files = natsFiles(join(dataDir, 'nats'))
if (!existsSync(files.options)) fail(`no DocFlow stack in ${dataDir}; run \`npm start\` first`, 1)
const server = JSON.parse(readFileSync(files.options, 'utf8')) as NatsConfigOptions
const endpoints = join(dataDir, 'endpoints.json')
const databaseUrl = process.env.DATABASE_URL ?? (existsSync(endpoints) ? (JSON.parse(readFileSync(endpoints, 'utf8')) as { databaseUrl?: string }).databaseUrl : undefined)

// Only remove touches the blob store (opening S3 loads the AWS SDK and checks the bucket).
const blobs = command === 'remove' ? await openSnapshotStore() : undefined

/** The store core keeps snapshots in: core's variables, else the folder `npm start` gives core (scripts/start.ts). */
async function openSnapshotStore(): Promise<BlobStore> {
  const env = { ...process.env, [BLOB_STORE_VARS.blobDir]: process.env[BLOB_STORE_VARS.blobDir] || blobDirOf(dataDir) }
  try {
    return await openBlobStore(loadConfig(BlobStoreConfig, BLOB_STORE_VARS, env))
  } catch (err) {
    return fail(`cannot open the blob store core keeps snapshots in: ${(err as Error).message}`, 1)
  }
}

let provisioner: Provisioner
try {
  provisioner = await Provisioner.open({ natsDir: join(dataDir, 'nats'), natsUrl: `nats://127.0.0.1:${server.port}`, databaseUrl, blobs, progress: (line) => console.log(`  ${line}`) })
} catch (err) {
  fail(`cannot reach nats-server on port ${server.port} (is \`npm start\` running?): ${(err as Error).message}`, 1)
}

try {
  switch (command) {
    case 'add': {
      const r = await provisioner.add(tenant, maxStorageBytes)
      console.log(`added ${r.tenant} (quota ${formatSize(r.maxStorageBytes)})`)
      break
    }
    case 'quota': {
      const r = await provisioner.setQuota(tenant, maxStorageBytes)
      console.log(`${r.tenant}: quota ${formatSize(r.maxStorageBytes)}`)
      break
    }
    case 'suspend':
    case 'resume': {
      const r = await provisioner.setStatus(tenant, command === 'suspend' ? TenantStatus.Suspended : TenantStatus.Active)
      console.log(`${r.tenant}: ${r.status}`)
      break
    }
    case 'remove':
      if (!values.yes) fail(`remove deletes every edit and document of ${tenant}; add --yes to confirm`)
      await provisioner.remove(tenant, { actor: values.actor!, reason: values.reason! })
      console.log(`removed ${tenant}`)
      break
    case 'revoke': {
      const r = await provisioner.revoke(revocation!)
      const what = r.tokenId !== undefined ? `token ${r.tokenId}` : r.userId !== undefined ? `tokens of ${r.userId} issued until now` : 'every token issued until now'
      console.log(`${tenant}: revoked ${what}; edges close their sockets with 4401`)
      break
    }
    case 'list': {
      const rows = await provisioner.list()
      if (values.json) {
        console.log(JSON.stringify(rows, null, 2))
        break
      }
      console.log(['tenant', 'status', 'quota', 'stored', 'used', 'messages', 'docs'].map((h) => h.padEnd(12)).join(''))
      for (const r of rows) {
        const used = `${((100 * r.streamBytes) / r.maxStorageBytes).toFixed(1)}%`
        console.log([r.tenant, r.status, formatSize(r.maxStorageBytes), formatSize(r.streamBytes), used, String(r.streamMessages), r.docs === null ? '-' : String(r.docs)].map((c) => c.padEnd(12)).join(''))
      }
      break
    }
  }
} catch (err) {
  fail((err as Error).message, 1)
} finally {
  await provisioner.close()
  await blobs?.close()
}
