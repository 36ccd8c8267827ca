import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Registry } from './metrics.ts'

export interface OpsServerOptions {
  /** Ops port (Prometheus scrapes it; never exposed publicly); 0 picks a free one. */
  port: number
  /** Listen address. Default 127.0.0.1 in dev; 0.0.0.0 inside a pod. */
  host: string
  registry: Registry
  /** 200 on /healthz while true. */
  healthy: () => boolean
}

export interface OpsServer {
  port: number
  close(): Promise<void>
}

/**
 * The process's private HTTP port: `/metrics` (Prometheus text) and `/healthz`. Metrics name
 * tenants and sizes, so they stay off the public ports clients reach.
 */
export async function serveOps(o: OpsServerOptions): Promise<OpsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405).end()
    if (path === '/healthz') {
      const ok = o.healthy()
      return void res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ok' : 'unavailable')
    }
    if (path !== '/metrics') return void res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: /metrics, /healthz')
    o.registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': o.registry.contentType }).end(text),
      (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${(err as Error).message}`),
    )
  })
  server.listen(o.port, o.host)
  await once(server, 'listening')
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
