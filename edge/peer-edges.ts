import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import { EDGE_BEAT_MS, EDGE_GONE_AFTER_MS, ServiceSubjects, decodeEdgeBeat, encodeEdgeBeat } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'

/**
 * Which other edges are alive: each edge beats every EDGE_BEAT_MS on one subject; an edge
 * unheard for EDGE_GONE_AFTER_MS (killed, partitioned) or saying it stops is gone, and
 * `onGone` drops the presence its clients had in this edge's rooms — sooner than y-protocols'
 * 30 s timeout. One subscription and one timer per edge process, whatever the room count.
 */
export class PeerEdges {
  private readonly lastSeen = new Map<string, number>()
  private sub: Subscription | null = null
  private timer: NodeJS.Timeout | undefined

  constructor(
    private readonly nc: NatsConnection,
    private readonly edgeId: string,
    private readonly log: Logger,
    private readonly onGone: (edgeId: string) => void,
  ) {}

  start(): void {
    // noEcho: our own beats never come back.
    this.sub = this.nc.subscribe(ServiceSubjects.edgeBeat, {
      callback: (err, msg) => {
        if (err) return
        try {
          const beat = decodeEdgeBeat(msg.data)
          if (beat.gone) this.gone(beat.edgeId)
          else this.lastSeen.set(beat.edgeId, Date.now())
        } catch (e) {
          this.log.warn({ err: e }, 'bad edge beat dropped')
        }
      },
    })
    this.beat(false)
    this.timer = setInterval(() => {
      this.beat(false)
      const quietSince = Date.now() - EDGE_GONE_AFTER_MS
      for (const [edgeId, at] of this.lastSeen) if (at < quietSince) this.gone(edgeId)
    }, EDGE_BEAT_MS)
  }

  /** Live edges of the deployment, this one included. */
  get liveCount(): number {
    return this.lastSeen.size + 1
  }

  /** Says this edge stops, so peers drop its clients' presence at once. */
  stop(): void {
    clearInterval(this.timer)
    this.sub?.unsubscribe()
    this.beat(true)
  }

  private gone(edgeId: string): void {
    this.lastSeen.delete(edgeId)
    this.log.info({ edgeId }, 'peer edge gone; its clients presence dropped')
    this.onGone(edgeId)
  }

  private beat(gone: boolean): void {
    try {
      this.nc.publish(ServiceSubjects.edgeBeat, encodeEdgeBeat({ edgeId: this.edgeId, gone }))
    } catch (err) {
      this.log.warn({ err }, 'edge beat not sent')
    }
  }
}
