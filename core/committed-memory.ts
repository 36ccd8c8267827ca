import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import { ServiceSubjects, decodeCommittedQuery, encodeCommittedNotice, type CommittedNotice, type CommittedQuery } from '../contracts/mod.ts'
import type { Logger } from '../runtime/log.ts'

/** How long a told notice is remembered: an edge asks again within seconds of missing one. */
const REMEMBER_MS = 120_000
/** Most message ids remembered (oldest forgotten first): ~100 bytes each. */
const MAX_REMEMBERED = 200_000

/**
 * The committed notices this core told edges lately (the "saved" signal), so an edge that missed
 * one — core NATS delivers at most once, and nothing reaches an edge away from NATS — can ask
 * again (CommittedQuery). A core restart forgets them: that edge's clients then stay unsaved for
 * those edits until they reconnect, which errs on the safe side.
 */
export class CommittedMemory {
  /** `<edgeId>\0<msgId>` → when told and the refused items; in the order told. */
  private readonly told = new Map<string, { at: number; items: number[] | null }>()

  remember(byEdge: Map<string, CommittedNotice>, now = Date.now()): void {
    for (const [edgeId, notice] of byEdge) {
      const refused = new Map(notice.refused.map((r) => [r.msgId, r.items]))
      for (const msgId of notice.msgIds) this.told.set(`${edgeId}\0${msgId}`, { at: now, items: refused.get(msgId) ?? null })
    }
    for (const [key, { at }] of this.told) {
      if (this.told.size <= MAX_REMEMBERED && now - at <= REMEMBER_MS) break
      this.told.delete(key)
    }
  }

  /** The notice of the asked messages this core told, or null when it told none of them. */
  answer({ edgeId, msgIds }: CommittedQuery, now = Date.now()): CommittedNotice | null {
    const notice: CommittedNotice = { msgIds: [], refused: [] }
    for (const msgId of msgIds) {
      const told = this.told.get(`${edgeId}\0${msgId}`)
      if (!told || now - told.at > REMEMBER_MS) continue
      notice.msgIds.push(msgId)
      if (told.items) notice.refused.push({ msgId, items: told.items })
    }
    return notice.msgIds.length > 0 ? notice : null
  }

  /** Answers edges' CommittedQuery on core NATS. */
  serve(nc: NatsConnection, log: Logger): Subscription {
    return nc.subscribe(ServiceSubjects.committedQuery, {
      callback: (err, msg) => {
        if (err) return log.warn({ err }, 'committed query subscription')
        try {
          const notice = this.answer(decodeCommittedQuery(msg.data))
          if (notice) msg.respond(encodeCommittedNotice(notice))
        } catch (e) {
          log.warn({ err: e }, 'bad committed query dropped')
        }
      },
    })
  }
}
