import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import { waitFor } from '../../scripts/lib/proc.ts'

export interface TestClient {
  doc: Y.Doc
  text: Y.Text
  provider: WebsocketProvider
  /** Resolves once the provider has synced with the edge. */
  synced(): Promise<void>
  /** Resolves with the close code of the next server close. */
  nextClose(): Promise<{ code: number; reason: string }>
  destroy(): void
}

/**
 * A stock y-websocket client. BroadcastChannel is off: in one Node process providers of one
 * room would otherwise sync through it and hide what the server does.
 */
export function yclient(edgeUrl: string, docId: string, token: string, doc = new Y.Doc()): TestClient {
  const provider = new WebsocketProvider(edgeUrl, docId, doc, {
    params: { token },
    WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket,
    disableBc: true,
  })
  return {
    doc,
    text: doc.getText('t'),
    provider,
    synced: () =>
      provider.synced
        ? Promise.resolve()
        : new Promise((resolve) => {
            const on = (s: boolean) => {
              if (!s) return
              provider.off('sync', on)
              resolve()
            }
            provider.on('sync', on)
          }),
    nextClose: () =>
      new Promise((resolve) => {
        const on = (event: { code: number; reason: string } | null) => {
          if (!event) return
          provider.off('connection-close', on as never)
          resolve({ code: event.code, reason: String(event.reason) })
        }
        provider.on('connection-close', on as never)
      }),
    destroy: () => {
      provider.destroy()
      doc.destroy()
    },
  }
}

/** Waits until `check` holds, polling; fails with `what`. */
export function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  return waitFor(what, async () => check(), timeoutMs, 20)
}

/** The document the read API returns, or the HTTP status when it is not 200. */
export async function readState(coreUrl: string, docId: string, token: string): Promise<Y.Doc | number> {
  const res = await fetch(`${coreUrl}/v1/docs/${encodeURIComponent(docId)}/state`, { headers: { authorization: `Bearer ${token}` } })
  if (res.status !== 200) return res.status
  const doc = new Y.Doc()
  Y.applyUpdate(doc, new Uint8Array(await res.arrayBuffer()))
  return doc
}

/** The materialized text of `docId` (its "t" Y.Text), or null while the read API has no such doc. */
export async function materializedText(coreUrl: string, docId: string, token: string): Promise<string | null> {
  const doc = await readState(coreUrl, docId, token)
  return typeof doc === 'number' ? null : doc.getText('t').toString()
}

/** What the tests' edits touch: text "t", map "m" and array "a", as plain values. */
export const docContents = (doc: Y.Doc) => ({ t: doc.getText('t').toString(), m: doc.getMap('m').toJSON(), a: doc.getArray('a').toJSON() })
