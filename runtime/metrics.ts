import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export { Counter, Gauge, Histogram, Registry }

/** A registry per process (and per in-process instance in tests), with Node's defaults. */
export function createRegistry(service: string, defaults = true): Registry {
  const registry = new Registry()
  registry.setDefaultLabels({ service })
  if (defaults) collectDefaultMetrics({ register: registry })
  return registry
}

/**
 * Buckets in seconds for sub-second pipeline latencies: 10 ms apart up to the 50 ms targets
 * (fanout, ingest → materialized), so a P95 near them reads off a bucket, not a 25 ms guess.
 */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.2, 0.3, 0.5, 1, 2.5, 5]
