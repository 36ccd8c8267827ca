import type uWS from 'uWebSockets.js'
import type { Registry } from '../runtime/metrics.ts'

/** GET /healthz (200 while `healthy()`, else 503) and GET /metrics (Prometheus text). */
export function serveHealth(app: uWS.TemplatedApp, healthy: () => boolean, registry: Registry): void {
  app.get('/healthz', (res) => {
    const ok = healthy()
    res.writeStatus(ok ? '200 OK' : '503 Service Unavailable').end(ok ? 'ok' : 'unavailable')
  })
  app.get('/metrics', (res) => {
    let aborted = false
    res.onAborted(() => {
      aborted = true
    })
    void registry.metrics().then((text) => {
      if (aborted) return
      res.cork(() => res.writeHeader('content-type', registry.contentType).end(text))
    })
  })
}
