/**
 * lib0's `writeVarString` and `writeAny`, the same bytes, written straight into the encoder's
 * buffer; and lib0's `readVarString` and `readAny`, the same values, short ASCII strings read
 * without a `TextDecoder` call.
 *
 * ```
 * varString := varUint(utf8ByteLength) • utf8Bytes
 * any       := lib0's tagged value: 119 • varString | 118 • varUint(keys) • (varString • any)*
 *            | 117 • varUint(length) • any* | every other tag as lib0 writes it
 * ```
 * lib0 (0.2.x) encodes a string into a shared buffer and then copies it into the encoder one
 * byte at a time, each with its own bounds check. A sender hashes every message's signed bytes
 * (room, id, text, device: ~230 characters, message-signature.ts), and in benchmark 3 that
 * was 5.6% of the sending device's thread (twenty-sixth session, BENCHMARKS.md); a history
 * snapshot writes every message's keys and strings once more (state-encoder.ts). Here a short
 * ASCII string is copied by a JavaScript loop after one bounds check, and any other
 * `TextEncoder.encodeInto` writes into the encoder's own buffer after room for the length is
 * reserved; a length that needs fewer bytes than reserved moves the string down by one. (The
 * loop costs 1.5–4 ns a character against 65–150 ns an `encodeInto` call, measured on two of
 * this project's VMs: it wins below ~40.)
 *
 * Reading, lib0 makes a view of each string's bytes and decodes it with a fatal `TextDecoder`:
 * ~100 ns a string, and a message in a Yjs update is eight to ten strings, most of them one-
 * or two-letter keys. A string of at most 12 ASCII bytes is built here by a loop (a message's
 * keys: ~50 ns a string against ~100); any other string, and anything malformed, is lib0's own
 * read from the same position, so what it returns or throws is lib0's.
 *
 * The writers and readers are made by {@link lib0StringWriters} and {@link lib0StringReaders}
 * from the lib0 module they work with, in functions that close over nothing else: the history
 * replica's thread (history-replica.ts) runs their source text against the CommonJS copy of
 * lib0 it loads.
 */
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'

/** What the writers use of lib0's encoding module. */
export interface Lib0Encoding {
  verifyLen(e: encoding.Encoder, len: number): void
  write(e: encoding.Encoder, byte: number): void
  writeVarUint(e: encoding.Encoder, n: number): void
  writeVarString(e: encoding.Encoder, s: string): void
  writeAny(e: encoding.Encoder, value: unknown): void
}

/** lib0-compatible writers: the same bytes as lib0's functions of the same names. */
export interface Lib0StringWriters {
  writeVarString(e: encoding.Encoder, s: string): void
  writeAny(e: encoding.Encoder, value: unknown): void
}

/**
 * The writers for one copy of lib0's encoding module. Self-contained: its source text is run
 * on the replica thread.
 *
 * @example
 * ```ts
 * import * as encoding from 'lib0/encoding'
 * const { writeAny } = lib0StringWriters(encoding)
 * writeAny(e, { t: 'hi', n: 1 }) // the bytes of encoding.writeAny(e, { t: 'hi', n: 1 })
 * ```
 */
export function lib0StringWriters(lib0: Lib0Encoding): Lib0StringWriters {
  const utf8 = new TextEncoder()
  // Below this, ASCII is copied by a loop (one-byte length, one bounds check).
  const LOOP_UNITS = 40
  // UTF-8 is at most 3 bytes per UTF-16 code unit. Beyond 2 bytes of length, lib0's path.
  const MAX_FAST_UNITS = Math.floor(0x3fff / 3)
  const writeVarString = (e: encoding.Encoder, s: string): void => {
    const units = s.length
    if (units < LOOP_UNITS) {
      lib0.verifyLen(e, units + 1)
      const buf = e.cbuf
      let at = e.cpos + 1
      let i = 0
      for (; i < units; i++) {
        const c = s.charCodeAt(i)
        if (c >= 0x80) break
        buf[at++] = c
      }
      if (i === units) {
        buf[e.cpos] = units
        e.cpos = at
        return
      }
      // Not ASCII: encodeInto below writes over what the loop wrote.
    } else if (units > MAX_FAST_UNITS) {
      lib0.writeVarString(e, s)
      return
    }
    const most = units * 3
    const reserved = most < 0x80 ? 1 : 2
    lib0.verifyLen(e, reserved + most)
    const buf = e.cbuf
    const at = e.cpos
    const written = utf8.encodeInto(s, buf.subarray(at + reserved, at + reserved + most)).written
    if (written < 0x80) {
      if (reserved === 2) buf.copyWithin(at + 1, at + 2, at + 2 + written)
      buf[at] = written
      e.cpos = at + 1 + written
    } else {
      buf[at] = 0x80 | (written & 0x7f)
      buf[at + 1] = written >>> 7
      e.cpos = at + 2 + written
    }
  }
  // lib0's tags and order; values that hold no string are lib0's own writes.
  const writeAny = (e: encoding.Encoder, value: unknown): void => {
    if (typeof value === 'string') {
      lib0.write(e, 119)
      writeVarString(e, value)
    } else if (typeof value !== 'object' || value === null || value instanceof Uint8Array) {
      lib0.writeAny(e, value)
    } else if (Array.isArray(value)) {
      lib0.write(e, 117)
      lib0.writeVarUint(e, value.length)
      for (let i = 0; i < value.length; i++) writeAny(e, value[i])
    } else {
      lib0.write(e, 118)
      const keys = Object.keys(value)
      lib0.writeVarUint(e, keys.length)
      for (let i = 0; i < keys.length; i++) {
        const key = keys[i]!
        writeVarString(e, key)
        writeAny(e, (value as Record<string, unknown>)[key])
      }
    }
  }
  return { writeVarString, writeAny }
}

const writers = lib0StringWriters(encoding)

/**
 * Write `s` as lib0's `writeVarString` does.
 *
 * @example
 * ```ts
 * const e = encoding.createEncoder()
 * writeVarString(e, 'héllo') // the bytes of encoding.writeVarString(e, 'héllo')
 * ```
 */
export const writeVarString: (e: encoding.Encoder, s: string) => void = writers.writeVarString

/**
 * Write `value` as lib0's `writeAny` does.
 *
 * @example
 * ```ts
 * writeAny(e, { t: 'hi', at: 1 }) // the bytes of encoding.writeAny(e, { t: 'hi', at: 1 })
 * ```
 */
export const writeAny: (e: encoding.Encoder, value: unknown) => void = writers.writeAny

/** What the readers use of lib0's decoding module. */
export interface Lib0Decoding {
  readVarUint(d: decoding.Decoder): number
  readVarString(d: decoding.Decoder): string
  readAny(d: decoding.Decoder): unknown
}

/** lib0-compatible readers: the same values (and failures) as lib0's functions of the same names. */
export interface Lib0StringReaders {
  readVarString(d: decoding.Decoder): string
  readAny(d: decoding.Decoder): unknown
}

/**
 * The readers for one copy of lib0's decoding module. Self-contained: its source text is run
 * on the replica thread.
 *
 * @example
 * ```ts
 * import * as decoding from 'lib0/decoding'
 * const { readAny } = lib0StringReaders(decoding)
 * readAny(decoding.createDecoder(bytes)) // what decoding.readAny reads
 * ```
 */
export function lib0StringReaders(lib0: Lib0Decoding): Lib0StringReaders {
  // At most this many bytes are read by the loop. V8 makes a string joined from pieces of 13
  // characters or more a cons string, flattened later when it is hashed or compared: with 64
  // here, applying benchmark 3's conversation took 2.4–2.8 × Yjs's time, not 0.9 ×.
  const LOOP_BYTES = 12
  const readVarString = (d: decoding.Decoder): string => {
    const arr = d.arr
    const at = d.pos
    const len = arr[at]!
    // A one-byte length (so < 0x80) of a string that ends within the bytes.
    if (len <= LOOP_BYTES && at + 1 + len <= arr.length) {
      const end = at + 1 + len
      let s = ''
      let i = at + 1
      for (; i < end; i++) {
        const c = arr[i]!
        if (c >= 0x80) break
        s += String.fromCharCode(c)
      }
      if (i === end) {
        d.pos = end
        return s
      }
    }
    return lib0.readVarString(d)
  }
  // lib0's tags and order; values that hold no string are lib0's own reads (the tag not consumed).
  const readAny = (d: decoding.Decoder): unknown => {
    const tag = d.arr[d.pos]
    if (tag === 119) {
      d.pos++
      return readVarString(d)
    }
    if (tag === 118) {
      d.pos++
      const n = lib0.readVarUint(d)
      const obj: Record<string, unknown> = {}
      for (let i = 0; i < n; i++) {
        const key = readVarString(d)
        obj[key] = readAny(d)
      }
      return obj
    }
    if (tag === 117) {
      d.pos++
      const n = lib0.readVarUint(d)
      const list: unknown[] = []
      for (let i = 0; i < n; i++) list.push(readAny(d))
      return list
    }
    return lib0.readAny(d)
  }
  return { readVarString, readAny }
}

const readers = lib0StringReaders(decoding)

/**
 * Read a string as lib0's `readVarString` does.
 *
 * @example
 * ```ts
 * readVarString(decoding.createDecoder(bytes)) // what decoding.readVarString reads
 * ```
 */
export const readVarString: (d: decoding.Decoder) => string = readers.readVarString

/**
 * Read a value as lib0's `readAny` does.
 *
 * @example
 * ```ts
 * readAny(decoding.createDecoder(bytes)) // what decoding.readAny reads
 * ```
 */
export const readAny: (d: decoding.Decoder) => unknown = readers.readAny
