import { Packr } from 'msgpackr'
import { z } from 'zod'

// Plain msgpack maps (no msgpackr records) so any language can read what we store.
const packr = new Packr({ useRecords: false, mapsAsObjects: true })

export function pack(value: unknown): Uint8Array {
  return packr.pack(value)
}

/** Decodes msgpack and validates it; throws a ZodError or a decode error with the reason. */
export function unpack<S extends z.ZodType>(schema: S, bytes: Uint8Array): z.infer<S> {
  return schema.parse(packr.unpack(bytes))
}

/** Describes a decode failure for dead letters and logs, without the stack. */
export function decodeFailureReason(err: unknown): string {
  if (err && typeof err === 'object' && 'issues' in err && Array.isArray(err.issues)) {
    return 'schema: ' + err.issues.map((i: { path: PropertyKey[]; message: string }) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')
  }
  return 'decode: ' + (err instanceof Error ? err.message : String(err))
}

/** Binary field: msgpack bin decodes to a Buffer, which is a Uint8Array. */
export const Bytes = z.custom<Uint8Array>((v) => v instanceof Uint8Array, 'expected bytes')
