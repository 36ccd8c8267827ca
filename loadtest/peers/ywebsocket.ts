import type { RunningSystem, StartOptions } from '../systems.ts'
export async function startYWebsocket(_options: StartOptions): Promise<RunningSystem> {
  throw new Error('not yet')
}
