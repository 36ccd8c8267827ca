// Per-edge figures of a DocFlow run with several edge processes: what each edge published to
// JetStream and received from its peers over NATS (its ops port's /metrics), and its own CPU and
// memory (/proc). They show every edge carried updates and fan-out really crossed NATS.
// Invariant: the figures are deltas over the measured window, read from the edges themselves;
// the server cores of the table count every edge anyway (they are the supervisor's children).
import { FanKind } from '../contracts/mod.ts'
import { ProcSampler } from './proc-stats.ts'

/** One edge process of a running system. */
export interface EdgeEndpoint {
  /** Its own public URL (the room is the docId). */
  wsUrl: string
  /** Its ops port's /metrics. */
  metricsUrl: string
  /** Its process id now (undefined while it is down). */
  pid(): number | undefined
}

export interface EdgeCounters {
  /** docflow_edge_updates_published_total: updates JetStream acked from this edge's clients. */
  published: number
  /** docflow_edge_fan_received_total{kind=update}: updates received from other edges over NATS. */
  fanReceived: number
  /** docflow_edge_connections: open client sockets. */
  connections: number
}

export interface EdgeWindow extends EdgeCounters {
  /** 1-based, in start order (edge, edge-2, ...). */
  edge: number
  cores: number
  pssMb: number
}

/** Sum of the samples of `name` whose labels hold every `labels` pair, from Prometheus text. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0
  let found = false
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line)
    if (!m || m[1] !== name) continue
    if (!Object.entries(labels).every(([k, v]) => (m[2] ?? '').includes(`${k}="${v}"`))) continue
    sum += Number(m[3])
    found = true
  }
  if (!found) throw new Error(`no ${name}${JSON.stringify(labels)} in the metrics`)
  return sum
}

export async function readEdgeCounters(metricsUrl: string): Promise<EdgeCounters> {
  const res = await fetch(metricsUrl)
  if (!res.ok) throw new Error(`${metricsUrl} answered ${res.status}`)
  const text = await res.text()
  // A counter with labels has no sample before its first inc: absent = 0.
  const fanReceived = text.includes(`docflow_edge_fan_received_total{kind="${FanKind.Update}"`) ? metricValue(text, 'docflow_edge_fan_received_total', { kind: FanKind.Update }) : 0
  return {
    published: metricValue(text, 'docflow_edge_updates_published_total'),
    fanReceived,
    connections: metricValue(text, 'docflow_edge_connections'),
  }
}

/** Each edge's counters and CPU over a window: start() at its opening, stop() at its close. */
export class EdgeWindowSampler {
  private readonly procs: ProcSampler[]
  private before: EdgeCounters[] = []

  constructor(private readonly edges: EdgeEndpoint[]) {
    this.procs = edges.map((e) => new ProcSampler({ pids: () => [e.pid()].filter((p): p is number => p !== undefined) }))
  }

  async start(): Promise<void> {
    this.before = await Promise.all(this.edges.map((e) => readEdgeCounters(e.metricsUrl)))
    for (const p of this.procs) p.start()
  }

  async stop(): Promise<EdgeWindow[]> {
    const reports = this.procs.map((p) => p.stop())
    const after = await Promise.all(this.edges.map((e) => readEdgeCounters(e.metricsUrl)))
    return after.map((a, i) => ({
      edge: i + 1,
      published: a.published - this.before[i]!.published,
      fanReceived: a.fanReceived - this.before[i]!.fanReceived,
      connections: a.connections,
      cores: reports[i]!.cores,
      pssMb: reports[i]!.pssMb,
    }))
  }
}

/** `edge 1: 0.21 cores, PSS 90 MB, 20 sockets, published 1,502, from peers 1,498; edge 2: ...` */
export function formatEdges(edges: EdgeWindow[]): string {
  const int = (n: number) => Math.round(n).toLocaleString('en-US')
  return edges
    .map((e) => `edge ${e.edge}: ${e.cores.toFixed(2)} cores, PSS ${e.pssMb.toFixed(0)} MB, ${int(e.connections)} sockets, published ${int(e.published)} updates, received ${int(e.fanReceived)} from other edges over NATS`)
    .join('; ')
}
