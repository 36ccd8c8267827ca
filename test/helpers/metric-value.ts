import type { Counter, Gauge } from 'prom-client'

/** A counter's (or gauge's) value summed over the series whose labels match `labels`. */
export async function counterValue(counter: Counter<string> | Gauge<string>, labels: Record<string, string | number> = {}): Promise<number> {
  const { values } = await counter.get()
  return values.filter((v) => Object.entries(labels).every(([k, l]) => String(v.labels[k]) === String(l))).reduce((n, v) => n + v.value, 0)
}
