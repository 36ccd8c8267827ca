// @ts-nocheck -- k6 JavaScript (goja): k6 modules and globals (__ENV, __VU, open), not type-checked here
// The y-websocket protocol by hand, for k6 (which cannot import npm packages): lib0 varint
// framing, y-protocols sync messages, and the Yjs v1 update of one string insert into the root
// Y.Text 't'. Plain ES module with no k6 import, so test/loadtest/k6-scripts.test.ts checks its
// bytes against the real y-protocols / Yjs decoders.
//
// Wire format (y-protocols/sync, lib0/encoding):
//   message      = varUint(messageType) payload        messageSync = 0, messageAwareness = 1
//   sync payload = varUint(syncType) varUint8Array     step1 = 0 (state vector), step2 = 1, update = 2 (Yjs update)
//   varUint      = 7 bits per byte, low first, high bit = more;  varUint8Array = varUint(len) bytes;  varString = varUint8Array(utf8)
//   Yjs update v1 = varUint(#clients) { varUint(#structs) varUint(client) varUint(firstClock) struct* }* deleteSet
//   Item struct  = info byte (content ref | 0x80 origin | 0x40 rightOrigin | 0x20 parentSub)
//                  [origin = varUint(client) varUint(clock)] [rightOrigin ...]
//                  [if no origins: parent = varUint(1) varString(root type name)] content
//   ContentString (ref 4) = varString;  empty delete set = varUint(0)

export const MESSAGE_SYNC = 0
export const MESSAGE_AWARENESS = 1
export const SYNC_STEP1 = 0
export const SYNC_STEP2 = 1
export const SYNC_UPDATE = 2
/** The root Y.Text the bench's clients type into. */
export const TEXT_NAME = 't'

const CONTENT_DELETED = 1
const CONTENT_STRING = 4
const BIT_ORIGIN = 0x80
const BIT_RIGHT_ORIGIN = 0x40
const BIT_PARENT_SUB = 0x20

// ------------------------------------------------------------------ encoding

/** Growable byte writer. */
export class Writer {
  constructor(size) {
    this.buf = new Uint8Array(size || 64)
    this.len = 0
  }
  ensure(n) {
    if (this.len + n <= this.buf.length) return
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + n))
    next.set(this.buf.subarray(0, this.len))
    this.buf = next
  }
  byte(b) {
    this.ensure(1)
    this.buf[this.len++] = b
  }
  varUint(n) {
    // Up to 2^53: no bit operators above 2^31.
    while (n > 0x7f) {
      this.byte(0x80 | (n % 0x80))
      n = Math.floor(n / 0x80)
    }
    this.byte(n)
  }
  bytes(a) {
    this.ensure(a.length)
    this.buf.set(a, this.len)
    this.len += a.length
  }
  varBytes(a) {
    this.varUint(a.length)
    this.bytes(a)
  }
  varString(s) {
    this.varBytes(utf8(s))
  }
  done() {
    return this.buf.slice(0, this.len)
  }
}

/** UTF-8 bytes of `s` (no TextEncoder in k6); a lone surrogate becomes U+FFFD as in TextEncoder. */
export function utf8(s) {
  const out = new Uint8Array(s.length * 3)
  let n = 0
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i)
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00)
        i++
      }
    }
    if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd
    if (c < 0x80) out[n++] = c
    else if (c < 0x800) {
      out[n++] = 0xc0 | (c >> 6)
      out[n++] = 0x80 | (c & 0x3f)
    } else if (c < 0x10000) {
      out[n++] = 0xe0 | (c >> 12)
      out[n++] = 0x80 | ((c >> 6) & 0x3f)
      out[n++] = 0x80 | (c & 0x3f)
    } else {
      out[n++] = 0xf0 | (c >> 18)
      out[n++] = 0x80 | ((c >> 12) & 0x3f)
      out[n++] = 0x80 | ((c >> 6) & 0x3f)
      out[n++] = 0x80 | (c & 0x3f)
    }
  }
  return out.slice(0, n)
}

function syncMessage(syncType, payload) {
  const w = new Writer(payload.length + 8)
  w.varUint(MESSAGE_SYNC)
  w.varUint(syncType)
  w.varBytes(payload)
  return w.done()
}

/** Sync step 1 with the empty state vector (a client that holds nothing): bytes 0 0 1 0. */
export function syncStep1Empty() {
  return syncMessage(SYNC_STEP1, new Uint8Array([0]))
}

/** Sync step 2 carrying `update` (reply to the server's step 1). */
export function syncStep2(update) {
  return syncMessage(SYNC_STEP2, update)
}

/** An update message carrying `update`. */
export function updateMessage(update) {
  return syncMessage(SYNC_UPDATE, update)
}

/** The empty Yjs update (no structs, empty delete set): what a client holding nothing answers a step 1 with. */
export const EMPTY_UPDATE = new Uint8Array([0, 0])

/**
 * The Yjs v1 update inserting `text` as one item of `client` at `clock` into the root Y.Text
 * TEXT_NAME, right after the item ending at (client, clock - 1) — i.e. this client's own previous
 * insert — or, for clock 0, at the start of the text.
 */
export function insertUpdate(client, clock, text) {
  const w = new Writer(text.length * 3 + 32)
  w.varUint(1) // one client
  w.varUint(1) // one struct
  w.varUint(client)
  w.varUint(clock)
  if (clock > 0) {
    w.byte(CONTENT_STRING | BIT_ORIGIN)
    w.varUint(client)
    w.varUint(clock - 1)
  } else {
    w.byte(CONTENT_STRING)
    w.varUint(1) // parent is a root type, named:
    w.varString(TEXT_NAME)
  }
  w.varString(text)
  w.varUint(0) // empty delete set
  return w.done()
}

/** Length of `text` in Yjs clock units (UTF-16 code units). */
export function clockLength(text) {
  return text.length
}

/** A random Yjs client id (uint32, as Yjs draws them). */
export function randomClientId() {
  return Math.floor(Math.random() * 0x100000000) >>> 0
}

// ------------------------------------------------------------------ timestamps in one character

/**
 * The wall-clock ms, modulo TIME_CHAR_WRAP, as ONE UTF-16 character below the surrogates (so it
 * survives UTF-8): a typed edit stays one character (one Yjs clock) and still tells its receiver
 * when it was typed. Valid for latencies under TIME_CHAR_WRAP ms (53 s).
 */
export const TIME_CHAR_WRAP = 0xd000
export function timeChar(wallMs) {
  return String.fromCharCode(Math.floor(wallMs) % TIME_CHAR_WRAP)
}
/** ms from the time encoded in `ch` to `nowMs`. */
export function sinceTimeChar(ch, nowMs) {
  return (((Math.floor(nowMs) % TIME_CHAR_WRAP) - ch.charCodeAt(0)) % TIME_CHAR_WRAP + TIME_CHAR_WRAP) % TIME_CHAR_WRAP
}

// ------------------------------------------------------------------ decoding

class Reader {
  constructor(bytes) {
    this.b = bytes
    this.pos = 0
  }
  varUint() {
    let n = 0
    let mult = 1
    for (;;) {
      if (this.pos >= this.b.length) throw new Error('unexpected end of message')
      const r = this.b[this.pos++]
      n += (r & 0x7f) * mult
      if (r < 0x80) return n
      mult *= 0x80
    }
  }
  varBytes() {
    const len = this.varUint()
    if (this.pos + len > this.b.length) throw new Error('unexpected end of message')
    const out = this.b.subarray(this.pos, this.pos + len)
    this.pos += len
    return out
  }
  varString() {
    return fromUtf8(this.varBytes())
  }
}

/** UTF-8 bytes to a JS string (BMP and astral). */
export function fromUtf8(bytes) {
  let s = ''
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i]
    let c
    if (b < 0x80) {
      c = b
      i += 1
    } else if (b < 0xe0) {
      c = ((b & 0x1f) << 6) | (bytes[i + 1] & 0x3f)
      i += 2
    } else if (b < 0xf0) {
      c = ((b & 0x0f) << 12) | ((bytes[i + 1] & 0x3f) << 6) | (bytes[i + 2] & 0x3f)
      i += 3
    } else {
      c = ((b & 0x07) << 18) | ((bytes[i + 1] & 0x3f) << 12) | ((bytes[i + 2] & 0x3f) << 6) | (bytes[i + 3] & 0x3f)
      i += 4
    }
    s += String.fromCodePoint(c)
  }
  return s
}

/** UTF-16 length of UTF-8 `bytes` without building the string (lead bytes; 4-byte sequences count 2). */
export function utf16Length(bytes) {
  let n = 0
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]
    if ((b & 0xc0) !== 0x80) n += b >= 0xf0 ? 2 : 1
  }
  return n
}

/**
 * One y-websocket message: { type, syncType?, payload? }; type MESSAGE_SYNC carries syncType and
 * payload (a state vector for step 1, a Yjs update otherwise). Other types: payload undefined.
 */
export function readMessage(bytes) {
  const r = new Reader(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes))
  const type = r.varUint()
  if (type !== MESSAGE_SYNC) return { type }
  const syncType = r.varUint()
  return { type, syncType, payload: r.varBytes() }
}

/**
 * The string items of a Yjs v1 update: [{ client, clock, text? , length }] — `text` only when
 * `withText` (a 20 MB join need not build the string). Handles GC, Skip, deleted and string
 * items, the structs the bench's clients make; another content type throws (not ours to measure).
 */
export function readStringItems(update, withText) {
  const r = new Reader(update)
  const items = []
  const clients = r.varUint()
  for (let i = 0; i < clients; i++) {
    const structs = r.varUint()
    const client = r.varUint()
    let clock = r.varUint()
    for (let j = 0; j < structs; j++) {
      const info = r.b[r.pos++]
      const ref = info & 0x1f
      if (ref === 0 || ref === 10) {
        clock += r.varUint() // GC or Skip: a length
        continue
      }
      if (info & BIT_ORIGIN) (r.varUint(), r.varUint())
      if (info & BIT_RIGHT_ORIGIN) (r.varUint(), r.varUint())
      if ((info & (BIT_ORIGIN | BIT_RIGHT_ORIGIN)) === 0) {
        if (r.varUint() === 1) r.varString()
        else (r.varUint(), r.varUint())
        if (info & BIT_PARENT_SUB) r.varString()
      }
      if (ref === CONTENT_DELETED) {
        clock += r.varUint() // deleted text: a length, no characters
        continue
      }
      if (ref !== CONTENT_STRING) throw new Error(`content type ${ref} is not a string`)
      const bytes = r.varBytes()
      const length = utf16Length(bytes)
      items.push(withText ? { client, clock, length, text: fromUtf8(bytes) } : { client, clock, length })
      clock += length
    }
  }
  return items
}
