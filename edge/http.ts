import type uWS from 'uWebSockets.js'

/** GET /healthz on the public port (200 while `healthy()`, else 503). Metrics live on the ops port only. */
export function serveHealth(app: uWS.TemplatedApp, healthy: () => boolean): void {
  app.get('/healthz', (res) => {
    const ok = healthy()
    res.writeStatus(ok ? '200 OK' : '503 Service Unavailable').end(ok ? 'ok' : 'unavailable')
  })
}
