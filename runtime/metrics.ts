import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export { Counter, Gauge, Histogram, Registry }

/** A registry per process (and per in-process instance in tests), with Node's defaults. */
export function createRegistry(service: string, defaults = true): Registry {
  const registry = new Registry()
  registry.setDefaultLabels({ service })
  if (defaults) collectDefaultMetrics({ register: registry })
  return registry
}

/** Buckets in seconds for sub-second pipeline latencies. */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2.5, 5]
