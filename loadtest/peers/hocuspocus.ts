import type { RunningSystem, StartOptions } from '../systems.ts'
export async function startHocuspocus(_options: StartOptions): Promise<RunningSystem> {
  throw new Error('not yet')
}
