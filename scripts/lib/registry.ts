import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { z } from 'zod'
import { DEFAULT_EDIT_PARTITIONS, MAX_EDIT_PARTITIONS, ServiceUser, TenantId, TenantStatus, type TenantRecord } from '../../contracts/mod.ts'

const Password = z.string().min(16)

const TenantEntry = z.object({
  status: z.enum([TenantStatus.Active, TenantStatus.Suspended]),
  maxStorageBytes: z.number().int().positive(),
  createdAt: z.string(),
  passwords: z.object({ admin: Password, app: Password }),
})

const RegistryFile = z.object({
  version: z.literal(1),
  /**
   * Partitions of this deployment's edits, fixed when the registry is created. Registries from
   * before the count was configurable were made with 16.
   */
  editPartitions: z.number().int().min(1).max(MAX_EDIT_PARTITIONS).default(16),
  /** Passwords of the service account's users, by user name. */
  service: z.record(z.enum(Object.values(ServiceUser) as [ServiceUser, ...ServiceUser[]]), Password),
  tenants: z.record(TenantId, TenantEntry),
})
export type RegistryFile = z.infer<typeof RegistryFile>
export type TenantEntry = z.infer<typeof TenantEntry>

const secret = () => randomBytes(18).toString('base64url')

/**
 * The tenants of one nats-server (config-file mode) and the credentials of every account user,
 * kept in one JSON file (mode 0600) from which the accounts configuration is generated.
 * Production uses operator/JWT mode instead (helm/).
 */
export class Registry {
  private constructor(
    readonly path: string,
    private data: RegistryFile,
  ) {}

  /** Reads the registry, or starts an empty one with fresh service passwords and `editPartitions`. */
  static open(path: string, editPartitions = DEFAULT_EDIT_PARTITIONS): Registry {
    if (!existsSync(path)) {
      const service = Object.fromEntries(Object.values(ServiceUser).map((u) => [u, secret()])) as RegistryFile['service']
      return new Registry(path, { version: 1, editPartitions, service, tenants: {} })
    }
    const parsed = RegistryFile.safeParse(JSON.parse(readFileSync(path, 'utf8')))
    if (!parsed.success) throw new Error(`${path} is not a valid tenant registry: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
    return new Registry(path, parsed.data)
  }

  get file(): Readonly<RegistryFile> {
    return this.data
  }

  get editPartitions(): number {
    return this.data.editPartitions
  }

  servicePassword(user: ServiceUser): string {
    return this.data.service[user]
  }

  tenant(name: string): TenantEntry | undefined {
    return this.data.tenants[name]
  }

  tenants(): [string, TenantEntry][] {
    return Object.entries(this.data.tenants).sort(([a], [b]) => a.localeCompare(b))
  }

  record(name: string): TenantRecord {
    const t = this.tenant(name)
    if (!t) throw new Error(`unknown tenant ${name}`)
    return { tenant: name, status: t.status, maxStorageBytes: t.maxStorageBytes, createdAt: t.createdAt }
  }

  addTenant(name: string, maxStorageBytes: number): TenantEntry {
    TenantId.parse(name)
    const entry: TenantEntry = { status: TenantStatus.Active, maxStorageBytes, createdAt: new Date().toISOString(), passwords: { admin: secret(), app: secret() } }
    this.data.tenants[name] = entry
    return entry
  }

  setTenant(name: string, change: Partial<Pick<TenantEntry, 'status' | 'maxStorageBytes'>>): void {
    const t = this.tenant(name)
    if (!t) throw new Error(`unknown tenant ${name}`)
    Object.assign(t, change)
  }

  removeTenant(name: string): void {
    delete this.data.tenants[name]
  }

  /** Writes atomically (temp file + rename), readable by its owner only. */
  save(): void {
    const tmp = `${this.path}.tmp`
    writeFileSync(tmp, JSON.stringify(this.data, null, 2), { mode: 0o600 })
    renameSync(tmp, this.path)
  }
}

const UNITS: Record<string, number> = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 }

/**
 * "10GB", "512MiB", "64KB" → bytes (KB = KiB = 1024 B, as nats-server reads them); throws on
 * anything else. The unit is required: a bare "10" meant as 10 GB would be a 10-byte quota.
 */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(B|[KMGT]i?B)$/i.exec(text.trim())
  if (!m) throw new Error(`not a size: ${JSON.stringify(text)} (a number and a unit, e.g. 512MB, 10GB, 1TiB)`)
  const bytes = Math.floor(Number(m[1]) * UNITS[m[2]!.toUpperCase().replace('I', '')]!)
  if (bytes < 1) throw new Error(`size must be positive: ${text}`)
  return bytes
}

export function formatSize(bytes: number): string {
  for (const unit of ['TB', 'GB', 'MB', 'KB']) {
    if (bytes >= UNITS[unit]!) return `${(bytes / UNITS[unit]!).toFixed(1).replace(/\.0$/, '')}${unit}`
  }
  return `${bytes}B`
}
