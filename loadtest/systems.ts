// The systems the benchmark compares, behind one interface. Each starts its servers in a temp
// dir on free ports and stops them completely: stop() leaves no process behind, and
// stopAllSystems() does the same for whatever is still running on Ctrl-C or an error.
import type pg from 'pg'
import type { EdgeEndpoint } from './edge-stats.ts'
import { startDocFlow } from './peers/docflow.ts'
import { startHocuspocus } from './peers/hocuspocus.ts'
import { startYWebsocket } from './peers/ywebsocket.ts'

export const SYSTEM_KINDS = ['docflow', 'ywebsocket', 'hocuspocus'] as const
export type SystemKind = (typeof SYSTEM_KINDS)[number]
export type ClientKind = 'y-websocket' | 'hocuspocus'

/** One typed edit the driver sampled: the writer's Yjs (clientID, clock) and its send wall time. */
export interface EditSample {
  docId: string
  client: number
  clock: number
  /** performance.timeOrigin + performance.now() at the insert, ms since the epoch. */
  sentWallMs: number
}

/** Edit → durable storage, over the samples found stored. */
export interface PersistedLatency {
  n: number
  /** Samples never found in storage (a lost edit, or storage not caught up when read). */
  missing: number
  p50Ms: number
  maxMs: number
}

export interface LatencySummary {
  n: number
  p50Ms: number
  p95Ms: number
}

export interface RunningSystem {
  /** 'DocFlow' | 'y-websocket reference' | 'Hocuspocus'. */
  name: string
  /** Name in the results table, with how it persists. */
  label: string
  client: ClientKind
  /** Base URL; the room is the docId. */
  wsUrl: string
  /** Connection parameters for one doc (e.g. { token }). */
  params(docId: string): Record<string, string>
  /** Every server process now, PostgreSQL backends included. */
  serverPids(): number[]
  /**
   * Time from each sampled edit to its durable storage. Call after the clients stopped typing
   * and converged; it waits (bounded) for storage to catch up.
   */
  persistedLatency(samples: EditSample[]): Promise<PersistedLatency>
  /**
   * Whether storage holds `client`'s edits up to `clock` in `docId`, waiting (bounded) for it. For
   * big docs, where persistedLatency's per-clock bookkeeping would not end. Default: persistedLatency.
   */
  storedUpTo?(docId: string, client: number, clock: number): Promise<boolean>
  /** DocFlow only: op-log committed_at − ingest_ts of the rows ingested in [fromWallMs, toWallMs]. */
  ingestToCommitted?(fromWallMs: number, toWallMs: number): Promise<LatencySummary>
  /** DocFlow only: its endpoints and parts, for the core scenarios (loadtest/scenarios/core-*.ts). */
  docflow?: DocFlowParts
  /** DocFlow with several edge processes: each edge on its own port, in start order. */
  edges?: EdgeEndpoint[]
  /** Folder holding the servers' logs (gone after stop()). */
  logsDir: string
  stop(): Promise<void>
}

/** What the core scenarios reach of a running DocFlow (npm start). */
export interface DocFlowParts {
  tenant: string
  /** An editor token of `tenant` for every document. */
  token: string
  /** nats-server, and the edge service user's login (the edge's own publish rights). */
  natsUrl: string
  edgeNatsUser: string
  edgeNatsPass: string
  /** The deployment's edit partition count (DOCFLOW_EDIT_PARTITIONS npm start provisioned). */
  editPartitions: number
  /** Core's read API base URL (http://host:port). */
  coreUrl: string
  coreMetricsUrl: string
  edgeMetricsUrl: string
  /** DocFlow's PostgreSQL. */
  db: pg.Pool
  /** Stops the core process and waits until npm start's supervisor brought a new one up (empty caches). */
  restartCore(): Promise<void>
}

export interface StartOptions {
  /** Where a line of progress goes. Default: nowhere. */
  say?: (line: string) => void
  /** DocFlow only: edge processes (npm start's EDGE_PROCESSES, each on its own public port). Default 1. */
  edges?: number
}

const running = new Set<RunningSystem>()

export async function startSystem(kind: SystemKind, options: StartOptions = {}): Promise<RunningSystem> {
  const start = { docflow: startDocFlow, ywebsocket: startYWebsocket, hocuspocus: startHocuspocus }[kind]
  const system = await start(options)
  running.add(system)
  const stop = system.stop.bind(system)
  system.stop = async () => {
    running.delete(system)
    await stop()
  }
  return system
}

/** Stops every system started here and not yet stopped (Ctrl-C, an error). */
export async function stopAllSystems(): Promise<void> {
  await Promise.allSettled([...running].map((s) => s.stop()))
}
