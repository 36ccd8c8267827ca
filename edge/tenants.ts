import type { NatsConnection } from '@nats-io/transport-node'
import { TENANT_ENSURE_SUBJECT, TenantStatus, decodeEnsureReply, encodeEnsureRequest, type TenantRecord } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'
import { TenantDirectory, type TenantReadStatus } from '../runtime/tenant-directory.ts'
import { TenantLookupError } from './errors.ts'

export type Admission = { ok: true } | { ok: false; reason: string }

export interface TenantAdmissionOptions {
  /** Dev only: ask the provisioner to create a tenant seen for the first time. Default false. */
  autoProvision: boolean
  /** Wait for that provisioning. Default 15_000. */
  provisionTimeoutMs: number
  /** Pause before following the tenants bucket again after its watch broke. Default 1_000. */
  watchRetryMs: number
}

/**
 * Whether a socket's tenant may connect, answered from the process's copy of DF_TENANTS
 * (runtime/tenant-directory.ts), so admitting a socket costs no NATS round trip. Active
 * tenants are admitted; unknown, suspended and removed ones refused (in dev an unknown one is
 * provisioned first); while the directory is not current, admission throws TenantLookupError
 * and the socket is told to retry. A suspension or removal calls `onRevoked`: live sockets go.
 */
export class TenantAdmission {
  private constructor(
    private readonly nc: NatsConnection,
    private readonly directory: TenantDirectory,
    private readonly opts: TenantAdmissionOptions,
    private readonly log: Logger,
  ) {}

  static async open(nc: NatsConnection, opts: TenantAdmissionOptions, log: Logger, onRevoked: (tenant: string, reason: string) => void): Promise<TenantAdmission> {
    const onChange = (tenant: string, status: TenantReadStatus) => {
      if (status === 'removed') onRevoked(tenant, `tenant ${tenant} was removed`)
      else if (status === TenantStatus.Suspended) onRevoked(tenant, `tenant ${tenant} is suspended`)
    }
    const directory = await TenantDirectory.open(nc, { watchRetryMs: opts.watchRetryMs, onChange }, log)
    return new TenantAdmission(nc, directory, opts, log)
  }

  stop(): void {
    this.directory.stop()
  }

  /** Whether a socket of this tenant may open; throws TenantLookupError while the directory is not current. */
  async admit(tenant: string): Promise<Admission> {
    let status = this.directory.status(tenant)
    if (status === 'unavailable') throw new TenantLookupError(`tenant ${tenant}: the tenant directory is not current (NATS away?)`)
    if (status === 'unknown' && this.opts.autoProvision) status = (await this.provision(tenant))?.status ?? 'unknown'
    if (status === TenantStatus.Active) return { ok: true }
    if (status === TenantStatus.Suspended) return { ok: false, reason: `tenant ${tenant} is suspended` }
    if (status === 'removed') return { ok: false, reason: `tenant ${tenant} was removed` }
    return { ok: false, reason: `tenant ${tenant} is not provisioned` }
  }

  private async provision(tenant: string): Promise<TenantRecord | null> {
    try {
      const reply = decodeEnsureReply((await this.nc.request(TENANT_ENSURE_SUBJECT, encodeEnsureRequest({ tenant }), { timeout: this.opts.provisionTimeoutMs })).data)
      if (reply.status === 'error') throw new Error(reply.message)
      this.log.info({ tenant }, 'tenant auto-provisioned (dev mode)')
      this.directory.remember(reply.record)
      return reply.record
    } catch (err) {
      this.log.error({ err, tenant }, 'tenant auto-provisioning failed')
      return null
    }
  }
}
