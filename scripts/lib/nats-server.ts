import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { natsServerBin } from './binaries.mjs'
import { exited, spawnLogged, stopStale, terminate, waitFor } from './proc.ts'
import { renderNatsConfig } from './nats-config.ts'

export interface NatsServer {
  url: string
  port: number
  monitorPort: number
  configFile: string
  process: ChildProcess
  /** Re-reads the configuration without dropping connections (SIGHUP). */
  reload(): void
  stop(): Promise<void>
}

export interface NatsServerOptions {
  dir: string
  port: number
  monitorPort: number
  maxFileStore?: string
}

/** Starts nats-server with JetStream under `dir` and waits until it is healthy. */
export async function startNatsServer(o: NatsServerOptions): Promise<NatsServer> {
  const bin = natsServerBin()
  if (!bin) throw new Error('nats-server is not installed (apt-get install nats-server; npm start installs it)')
  mkdirSync(o.dir, { recursive: true })
  const configFile = join(o.dir, 'nats-server.conf')
  const pidFile = join(o.dir, 'nats-server.pid')
  // A server left running by a killed supervisor still holds the store.
  stopStale(pidFile, 'nats-server', 'SIGTERM')
  writeFileSync(configFile, renderNatsConfig({ port: o.port, monitorPort: o.monitorPort, storeDir: join(o.dir, 'jetstream'), pidFile, maxFileStore: o.maxFileStore ?? '10GB' }))
  const child = spawnLogged(bin, ['-c', configFile], join(o.dir, 'nats-server.log'))
  let died = false
  void exited(child).then(() => (died = true))
  await waitFor(`nats-server on port ${o.port} (log: ${join(o.dir, 'nats-server.log')})`, async () => {
    if (died) throw new Error('nats-server exited')
    const res = await fetch(`http://127.0.0.1:${o.monitorPort}/healthz?js-enabled-only=true`)
    return res.ok
  })
  return {
    url: `nats://127.0.0.1:${o.port}`,
    port: o.port,
    monitorPort: o.monitorPort,
    configFile,
    process: child,
    reload: () => void child.kill('SIGHUP'),
    stop: () => terminate(child, 'SIGTERM'),
  }
}
