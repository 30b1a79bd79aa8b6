/**
 * Bounded, canonical readers and writers for the lib0 encoding primitives that Yjs V1 updates
 * are built from (varUint, varInt, varString, varUint8Array, Any), plus a JSON syntax checker.
 *
 * Why not lib0's own decoding.js: it sets no bounds and accepts non-canonical input. Its varUint
 * takes overlong forms (`81 00` = 1), returns 2^56 from 8 bytes and NaN from 200 × `80 00`; its
 * `readUint8` returns undefined past the end; `readAny` recurses without a depth cap and throws
 * TypeError on an unknown tag. Everything here either returns a value that a later reader
 * can trust, or throws `PetrelError(Malformed)`.
 *
 * Canonical forms accepted (exactly what lib0's writers produce):
 *   varUint  1–8 bytes, 7 bits per byte LSB first, last byte ≠ 0 unless it is the only byte,
 *            value ≤ 2^53−1 (`ff ff ff ff ff ff ff 0f`).
 *   varInt   first byte: 0x80 continue | 0x40 negative | 6 magnitude bits; then varUint-style
 *            groups; same length/overlong/magnitude rules. `40` (−0) is accepted: writeAny(-0)
 *            produces it.
 *   varString / varUint8Array   varUint byte length ≤ remaining bytes (and ≤ a caller cap), then
 *            that many bytes; strings must be well-formed UTF-8 (a BOM is kept, as lib0 does,
 *            because dropping it would change a ContentString's clock length).
 *   Any      tag 0x74..0x7f as in lib0 `writeAny`, containers nested at most `maxDepth` deep.
 */
import { ErrorCode, PetrelError } from './errors.js'

const MAX_SAFE = Number.MAX_SAFE_INTEGER

/** Throws the one error type callers of network parsers must expect. */
export function malformed(message: string): never {
  throw new PetrelError(ErrorCode.Malformed, message)
}

// fatal: reject ill-formed UTF-8 instead of silently inserting U+FFFD, so two readers can never
// disagree about a string. ignoreBOM: keep a leading U+FEFF, as lib0 does.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/** A cursor over untrusted bytes in which every read is bounds-checked. */
export class StrictDecoder {
  readonly bytes: Uint8Array
  pos: number

  constructor(bytes: Uint8Array, pos = 0) {
    this.bytes = bytes
    this.pos = pos
  }

  get remaining(): number {
    return this.bytes.length - this.pos
  }

  private fail(message: string): never {
    return malformed(`${message} at byte ${this.pos}`)
  }

  readUint8(): number {
    if (this.pos >= this.bytes.length) this.fail('unexpected end of input')
    return this.bytes[this.pos++]!
  }

  /** Peeks without consuming; callers use it to check an Any tag before committing. */
  peekUint8(): number {
    if (this.pos >= this.bytes.length) this.fail('unexpected end of input')
    return this.bytes[this.pos]!
  }

  readVarUint(): number {
    const start = this.pos
    let value = 0
    let mult = 1
    for (let i = 0; i < 8; i++) {
      const b = this.readUint8()
      value += (b & 0x7f) * mult
      if (b < 0x80) {
        if (b === 0 && i > 0) malformed(`overlong varUint at byte ${start}`)
        // Partial sums below 2^53 are exact and rounding is monotone, so this cannot miss.
        if (value > MAX_SAFE) malformed(`varUint above 2^53-1 at byte ${start}`)
        return value
      }
      mult *= 128
    }
    return malformed(`varUint longer than 8 bytes at byte ${start}`)
  }

  readVarInt(): number {
    const start = this.pos
    const first = this.readUint8()
    const negative = (first & 0x40) !== 0
    let value = first & 0x3f
    if (first < 0x80) return negative ? -value : value
    let mult = 64
    for (let i = 1; i < 8; i++) {
      const b = this.readUint8()
      value += (b & 0x7f) * mult
      if (b < 0x80) {
        if (b === 0) malformed(`overlong varInt at byte ${start}`)
        if (value > MAX_SAFE) malformed(`varInt magnitude above 2^53-1 at byte ${start}`)
        return negative ? -value : value
      }
      mult *= 128
    }
    return malformed(`varInt longer than 8 bytes at byte ${start}`)
  }

  /**
   * Reads a count of items that each need at least `minBytesEach` bytes, so a 5-byte claim of
   * 2^31 items fails here instead of driving a loop or an allocation. `reserve` is the number of
   * bytes that must still follow the items (e.g. the delete set after the struct groups).
   */
  readCount(minBytesEach: number, what: string, reserve = 0): number {
    const start = this.pos
    const n = this.readVarUint()
    if (n * minBytesEach > this.remaining - reserve) {
      malformed(`${what}: count ${n} at byte ${start} cannot fit in the ${this.remaining} bytes left`)
    }
    return n
  }

  /** Advances past `n` bytes. */
  skip(n: number): void {
    if (n > this.remaining) this.fail(`${n} bytes claimed, ${this.remaining} left`)
    this.pos += n
  }

  /** Reads a length prefix, checks it against `maxBytes` and the input, skips the bytes; returns their start. */
  private readLength(maxBytes: number, what: string): number {
    const n = this.readVarUint()
    if (n > maxBytes) this.fail(`${what} of ${n} bytes exceeds the limit of ${maxBytes}`)
    const start = this.pos
    this.skip(n)
    return start
  }

  /** Returns a view (no copy) of the payload. */
  readVarUint8Array(maxBytes = MAX_SAFE, what = 'byte array'): Uint8Array {
    const start = this.readLength(maxBytes, what)
    return this.bytes.subarray(start, this.pos)
  }

  // The string readers work in place for short strings: a subarray and TextDecoder call per
  // string would make an update of 500k one-byte strings cost hundreds of milliseconds. ASCII
  // strings under 13 bytes (short keys, names) are built directly; anything else goes through
  // the fatal decoder.

  readVarString(maxBytes = MAX_SAFE, what = 'string'): string {
    const start = this.readLength(maxBytes, what)
    const end = this.pos
    // From 13 bytes on, the native decoder (which also validates): a message id of 56 took
    // ~1.5 µs through a JS check loop and fromCharCode.apply, most of a cold catch-up's parse.
    if (end - start >= 13) return this.decode(start, end, what)
    for (let i = start; i < end; i++) if (this.bytes[i]! >= 0x80) return this.decode(start, end, what)
    // Below 13 characters V8 copies a concatenation into a flat string.
    let s = ''
    for (let i = start; i < end; i++) s += String.fromCharCode(this.bytes[i]!)
    return s
  }

  /**
   * `readVarString` for a string that mostly repeats (root type names): the same bytes as the
   * last call with this `cache` give the same string, without building it again.
   */
  readRepeatedString(maxBytes: number, what: string, cache: { bytes: Uint8Array; value: string }): string {
    const at = this.pos
    const start = this.readLength(maxBytes, what)
    const n = this.pos - start
    const last = cache.bytes
    if (last.length === n) {
      let same = true
      for (let i = 0; i < n; i++) if (last[i] !== this.bytes[start + i]) same = false
      if (same) return cache.value
    }
    this.pos = at
    const value = this.readVarString(maxBytes, what)
    cache.bytes = this.bytes.slice(start, this.pos)
    cache.value = value
    return value
  }

  /** Validates a varString without keeping it; returns its length in UTF-16 code units. */
  skipVarString(maxBytes = MAX_SAFE, what = 'string'): number {
    const start = this.readLength(maxBytes, what)
    for (let i = start; i < this.pos; i++) {
      if (this.bytes[i]! >= 0x80) return this.decode(start, this.pos, what).length
    }
    return this.pos - start
  }

  private decode(start: number, end: number, what: string): string {
    try {
      return utf8.decode(this.bytes.subarray(start, end))
    } catch {
      return malformed(`${what} is not valid UTF-8 (ends at byte ${end})`)
    }
  }

  /** Validates one lib0 Any value without building it; containers nest at most `maxDepth` deep. */
  skipAny(maxDepth: number): void {
    const tag = this.readUint8()
    switch (tag) {
      case 0x7f: // undefined
      case 0x7e: // null
      case 0x79: // false
      case 0x78: // true
        return
      case 0x7d: // integer
        this.readVarInt()
        return
      case 0x7c: // float32
        this.skip(4)
        return
      case 0x7b: // float64
      case 0x7a: // bigint64
        this.skip(8)
        return
      case 0x77:
        this.skipVarString(MAX_SAFE, 'Any string')
        return
      case 0x76: {
        if (maxDepth <= 0) this.fail('Any nested too deeply')
        // Each entry is at least a 1-byte key length plus a 1-byte value.
        const n = this.readCount(2, 'Any object entries')
        for (let i = 0; i < n; i++) {
          this.skipVarString(MAX_SAFE, 'Any object key')
          this.skipAny(maxDepth - 1)
        }
        return
      }
      case 0x75: {
        if (maxDepth <= 0) this.fail('Any nested too deeply')
        const n = this.readCount(1, 'Any array elements')
        for (let i = 0; i < n; i++) this.skipAny(maxDepth - 1)
        return
      }
      case 0x74:
        this.readLength(MAX_SAFE, 'Any byte array')
        return
      default:
        this.pos--
        this.fail(`unknown Any tag 0x${tag.toString(16)}`)
    }
  }
}

/** Bytes a canonical varUint of `n` takes. */
export function varUintLength(n: number): number {
  let len = 1
  while (n >= 128) {
    n = Math.floor(n / 128)
    len++
  }
  return len
}

/** Writes `n` as a lib0 varUint at `at` in `out` (which must have room); returns the position after it. */
export function putVarUint(out: Uint8Array, at: number, n: number): number {
  while (n >= 0x80) {
    out[at++] = (n & 0x7f) | 0x80
    n = Math.floor(n / 0x80)
  }
  out[at++] = n
  return at
}

/** Append-only byte builder; sizes are small and known, so chunks are joined once at the end. */
export class ByteWriter {
  private readonly chunks: Uint8Array[] = []
  private pending: number[] = []
  private size = 0

  varUint(n: number): this {
    while (n >= 128) {
      this.pending.push((n % 128) | 0x80)
      n = Math.floor(n / 128)
    }
    this.pending.push(n)
    return this
  }

  bytes(b: Uint8Array): this {
    this.flushPending()
    this.chunks.push(b)
    this.size += b.length
    return this
  }

  finish(): Uint8Array {
    this.flushPending()
    const out = new Uint8Array(this.size)
    let off = 0
    for (const c of this.chunks) {
      out.set(c, off)
      off += c.length
    }
    return out
  }

  private flushPending(): void {
    if (this.pending.length === 0) return
    this.chunks.push(Uint8Array.from(this.pending))
    this.size += this.pending.length
    this.pending = []
  }
}

const JSON_ESCAPES = new Set([...'"\\/bfnrt'].map((ch) => ch.charCodeAt(0)))
const isDigit = (c: number) => c >= 0x30 && c <= 0x39
const isHex = (c: number) => isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66)

// Scanner state lives at module level so a call allocates nothing but its bracket stack: an
// update can hold 500k tiny JSON texts. JS is single-threaded and the scanner never re-enters.
let jText = ''
let jPos = 0
let jWhat = ''

function jFail(why: string): never {
  return malformed(`${jWhat}: invalid JSON (${why} at char ${jPos})`)
}

function jWs(): void {
  for (;;) {
    const c = jText.charCodeAt(jPos)
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return
    jPos++
  }
}

function jString(): void {
  if (jText.charCodeAt(jPos) !== 0x22) jFail('expected string')
  jPos++
  for (;;) {
    if (jPos >= jText.length) jFail('unterminated string')
    const c = jText.charCodeAt(jPos++)
    if (c === 0x22) return
    if (c < 0x20) jFail('control character in string')
    if (c === 0x5c) {
      const e = jText.charCodeAt(jPos++)
      if (e === 0x75) {
        for (let k = 0; k < 4; k++) if (!isHex(jText.charCodeAt(jPos++))) jFail('bad \\u escape')
      } else if (!JSON_ESCAPES.has(e)) jFail('bad escape')
    }
  }
}

function jDigits(): void {
  if (!isDigit(jText.charCodeAt(jPos))) jFail('expected digit')
  while (isDigit(jText.charCodeAt(jPos))) jPos++
}

function jNumber(): void {
  if (jText.charCodeAt(jPos) === 0x2d) jPos++
  if (jText.charCodeAt(jPos) === 0x30) jPos++
  else jDigits()
  if (jText.charCodeAt(jPos) === 0x2e) {
    jPos++
    jDigits()
  }
  const e = jText.charCodeAt(jPos)
  if (e === 0x65 || e === 0x45) {
    jPos++
    const sign = jText.charCodeAt(jPos)
    if (sign === 0x2b || sign === 0x2d) jPos++
    jDigits()
  }
}

/** After `{` and whitespace: a key string, whitespace and a colon. */
function jKey(): void {
  jString()
  jWs()
  if (jText.charCodeAt(jPos++) !== 0x3a) jFail("expected ':'")
}

/**
 * Throws Malformed unless `JSON.parse(text)` would succeed, with nesting ≤ `maxDepth`.
 *
 * Why not JSON.parse: Yjs JSON.parses ContentJSON/Embed/Format text while reading an update, so
 * bad text makes the whole update fail on every client; but JSON.parse builds the value, and
 * 1 MiB of `[` nesting took ~650 ms. This scanner is linear and builds nothing.
 */
export function checkJson(text: string, maxDepth: number, what: string): void {
  jText = text
  jPos = 0
  jWhat = what
  const stack: number[] = [] // the closing bracket of each open container
  for (;;) {
    // Expecting a value.
    jWs()
    const c = jText.charCodeAt(jPos)
    if (c === 0x7b || c === 0x5b) {
      if (stack.length >= maxDepth) jFail('nested too deeply')
      const close = c + 2 // '{' → '}', '[' → ']'
      jPos++
      jWs()
      if (jText.charCodeAt(jPos) !== close) {
        stack.push(close)
        if (c === 0x7b) jKey()
        continue
      }
      jPos++
    } else if (c === 0x22) jString()
    else if (c === 0x2d || isDigit(c)) jNumber()
    else if (jText.startsWith('true', jPos)) jPos += 4
    else if (jText.startsWith('false', jPos)) jPos += 5
    else if (jText.startsWith('null', jPos)) jPos += 4
    else jFail('expected value')
    // After a value: close containers until a comma starts the next element, or the text ends.
    for (;;) {
      jWs()
      const close = stack[stack.length - 1]
      if (close === undefined) {
        if (jPos !== jText.length) jFail('trailing characters')
        jText = ''
        return
      }
      const d = jText.charCodeAt(jPos++)
      if (d === 0x2c) {
        if (close === 0x7d) {
          jWs()
          jKey()
        }
        break
      }
      if (d !== close) jFail("expected ',' or a closing bracket")
      stack.pop()
    }
  }
}
