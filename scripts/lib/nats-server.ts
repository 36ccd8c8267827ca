import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { SERVICE_ACCOUNT } from '../../contracts/mod.ts'
import { natsServerBin } from './binaries.mjs'
import { GaveUp, alive, exited, lastLines, probe, spawnLogged, stopStale, terminate, waitFor } from './proc.ts'
import { renderNatsConfig, type NatsConfigOptions } from './nats-config.ts'
import { Registry } from './registry.ts'

export interface NatsServer {
  url: string
  port: number
  monitorPort: number
  dir: string
  process: ChildProcess
  stop(): Promise<void>
}

export interface NatsServerOptions {
  dir: string
  port: number
  monitorPort: number
  /** JetStream file storage of the server; every account quota is reserved out of it. Default 100GB. */
  maxFileStore?: string
  /** Quota of the service account (AGG, KV). Default 10 GiB. */
  serviceMaxFileBytes?: number
  /** Partitions of a new deployment's edits (an existing registry keeps its own). Default DEFAULT_EDIT_PARTITIONS. */
  editPartitions?: number
  /** Own process group, so a terminal's Ctrl-C reaches only the supervisor, which stops parts in order. Default false. */
  ownProcessGroup?: boolean
}

/** Files of one nats-server under its folder. */
export function natsFiles(dir: string) {
  return {
    config: join(dir, 'nats-server.conf'),
    registry: join(dir, 'accounts.json'),
    options: join(dir, 'server.json'),
    pid: join(dir, 'nats-server.pid'),
    log: join(dir, 'nats-server.log'),
  }
}

/** (Re)generates nats-server.conf from the server options and the tenant registry. */
export function writeNatsConfig(dir: string): void {
  const f = natsFiles(dir)
  const options = JSON.parse(readFileSync(f.options, 'utf8')) as NatsConfigOptions
  const tmp = `${f.config}.tmp`
  writeFileSync(tmp, renderNatsConfig(options, Registry.open(f.registry).file), { mode: 0o600 })
  renameSync(tmp, f.config)
}

/**
 * Applies the registry to a running server: regenerate the config, SIGHUP (a reload keeps
 * every connection), and wait until the server's accounts match the registry.
 */
export async function reloadNats(dir: string): Promise<void> {
  const f = natsFiles(dir)
  writeNatsConfig(dir)
  const pid = Number(readFileSync(f.pid, 'utf8').trim())
  if (!pid || !alive(pid)) throw new Error(`nats-server is not running (no live pid in ${f.pid})`)
  const { monitorPort } = JSON.parse(readFileSync(f.options, 'utf8')) as NatsConfigOptions
  const loadedAt = async () => (await monitorJson<{ config_load_time: string }>(monitorPort, 'varz')).config_load_time
  const before = await loadedAt()
  process.kill(pid, 'SIGHUP')
  // The signal is handled asynchronously: until the load time moves, every check below still
  // reads the old config (a quota change keeps the accounts, so their check alone passes at once).
  await waitFor(`nats-server to reload its config (log: ${f.log})`, async () => (await loadedAt()) !== before, 15_000)
  const want = Registry.open(f.registry)
    .tenants()
    .map(([t]) => t)
  await waitFor('nats-server to load the new accounts', async () => {
    const { accounts } = await monitorJson<{ accounts: string[] }>(monitorPort, 'accountz')
    const tenants = accounts.filter((a) => !a.startsWith('$') && a !== SERVICE_ACCOUNT)
    return tenants.length === want.length && want.every((t) => tenants.includes(t))
  }, 15_000)
}

/** A JSON page of the monitor port (varz, accountz). */
async function monitorJson<T>(monitorPort: number, page: string): Promise<T> {
  return (await (await probe(`http://127.0.0.1:${monitorPort}/${page}`)).json()) as T
}

/** Starts nats-server with JetStream and the generated accounts under `dir`; waits until healthy. */
export async function startNatsServer(o: NatsServerOptions): Promise<NatsServer> {
  const bin = natsServerBin()
  if (!bin) throw new Error('nats-server is not installed (apt-get install nats-server; npm start installs it)')
  mkdirSync(o.dir, { recursive: true })
  const f = natsFiles(o.dir)
  // A server left running by a killed supervisor still holds the store.
  stopStale(f.pid, 'nats-server', 'SIGTERM')
  const options: NatsConfigOptions = {
    port: o.port,
    monitorPort: o.monitorPort,
    storeDir: join(o.dir, 'jetstream'),
    pidFile: f.pid,
    maxFileStore: o.maxFileStore ?? '100GB',
    serviceMaxFileBytes: o.serviceMaxFileBytes ?? 10 * 1024 ** 3,
  }
  writeFileSync(f.options, JSON.stringify(options, null, 2))
  if (!existsSync(f.registry)) Registry.open(f.registry, o.editPartitions).save()
  writeNatsConfig(o.dir)
  // One Go scheduler thread unless the environment sets GOMAXPROCS: here nats-server shares the
  // box's cores with edge, core and PostgreSQL, and a second one cost them CPU and latency
  // (interleaved typing runs, server cores: 0.99 against 1.07 at 5,000 ops/s, 0.80 against 0.82
  // at 2,000; nats-server itself needs ~0.1 core). Production pods size it to their CPU limit.
  const child = spawnLogged(bin, ['-c', f.config], f.log, { env: { GOMAXPROCS: '1', ...process.env }, detached: o.ownProcessGroup === true })
  let died = false
  void exited(child).then(() => (died = true))
  try {
    // Another nats-server on the monitor port answers too (ours then fails to bind and exits,
    // maybe only after a check): the server answering must be the one whose ID ours logged.
    let own: string | undefined
    await waitFor(`nats-server on port ${o.port} (log: ${f.log})`, async () => {
      if (died) throw new GaveUp(`nats-server exited: ${lastLines(f.log)}`)
      own ??= new RegExp(`^\\[${child.pid}\\] .*\\bID:\\s+(\\S+)`, 'm').exec(existsSync(f.log) ? readFileSync(f.log, 'utf8') : '')?.[1]
      if (!own) return false
      const { server_id: serving } = await monitorJson<{ server_id: string }>(o.monitorPort, 'varz')
      if (serving !== own) throw new GaveUp(`monitor port ${o.monitorPort} answers another nats-server (${serving}): address already in use`)
      return (await probe(`http://127.0.0.1:${o.monitorPort}/healthz?js-enabled-only=true`)).ok
    })
  } catch (err) {
    await terminate(child, 'SIGTERM')
    throw err
  }
  return {
    url: `nats://127.0.0.1:${o.port}`,
    port: o.port,
    monitorPort: o.monitorPort,
    dir: o.dir,
    process: child,
    stop: () => terminate(child, 'SIGTERM'),
  }
}
