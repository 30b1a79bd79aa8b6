import { hkdf as nobleHkdf } from '@noble/hashes/hkdf.js'
import { sha256 as nobleSha256 } from '@noble/hashes/sha2.js'
import { ErrorCode, PetrelError } from '../errors.js'

/** @internal Throws TypeError unless `value` is a Uint8Array (noble-style boundary check). */
export function assertBytes(value: unknown, name: string): asserts value is Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new TypeError(`${name} must be a Uint8Array, got ${value === null ? 'null' : typeof value}`)
  }
}

/** @internal Throws TypeError / RangeError unless `value` is a Uint8Array of exactly `length` bytes. */
export function assertBytesLength(value: unknown, length: number, name: string): asserts value is Uint8Array {
  assertBytes(value, name)
  if (value.length !== length) throw new RangeError(`${name} must be ${length} bytes, got ${value.length}`)
}

/** @internal Concatenates byte arrays into a fresh buffer the caller owns. */
export function concatBytes(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  let total = 0
  for (const p of parts) total += p.length
  const out = new Uint8Array(total)
  let off = 0
  for (const p of parts) {
    out.set(p, off)
    off += p.length
  }
  return out
}

const encoder = new TextEncoder()

/** @internal UTF-8 encoding (TextEncoder exists in browsers and Node). */
export const utf8 = (s: string): Uint8Array => encoder.encode(s)

interface NodeHashing {
  createHash(alg: 'sha256'): { update(data: Uint8Array): { digest(): Uint8Array } }
  /** One-shot (Node 20.12+): no hash object per call. */
  hash?(alg: 'sha256', data: Uint8Array, encoding: 'buffer'): Uint8Array
}

/**
 * Node's OpenSSL SHA-256 where there is one: every message of a batch is hashed when it is
 * signed and when it is checked, and noble's took ~15 µs a message on the benchmark machine
 * against ~2 µs. `process.getBuiltinModule` keeps the browser bundle free of a node: import;
 * browsers use noble (WebCrypto's digest is asynchronous).
 */
const nodeHash = ((): NodeHashing | undefined => {
  try {
    const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process
    const mod = proc?.getBuiltinModule?.('node:crypto') as NodeHashing | undefined
    if (!mod) return undefined
    // Used only if it gives noble's digest of a probe (FIPS 180-4's "abc" vector).
    const probe = Uint8Array.of(0x61, 0x62, 0x63)
    const ours = mod.createHash('sha256').update(probe).digest()
    const reference = nobleSha256(probe)
    return ours.length === 32 && reference.every((b, i) => ours[i] === b) ? mod : undefined
  } catch {
    return undefined
  }
})()

/**
 * SHA-256 of `data`.
 *
 * @example const digest = sha256(new TextEncoder().encode('hello'))
 */
export function sha256(data: Uint8Array): Uint8Array {
  assertBytes(data, 'data')
  if (nodeHash === undefined) return nobleSha256(data)
  const d = nodeDigest(nodeHash, data)
  // A Buffer may be a view of Node's shared pool: give back a plain array of its own.
  return new Uint8Array(d.buffer.slice(d.byteOffset, d.byteOffset + d.length))
}

const nodeDigest = (node: NodeHashing, data: Uint8Array): Uint8Array => (node.hash ? node.hash('sha256', data, 'buffer') : node.createHash('sha256').update(data).digest())

/**
 * SHA-256 of `data` written into `out` at `at` (32 bytes): no array of its own for the digest,
 * for callers that gather many (a batch of messages' hashes).
 *
 * @example sha256Into(signedBytes, hashes, i * 32)
 */
export function sha256Into(data: Uint8Array, out: Uint8Array, at: number): void {
  assertBytes(data, 'data')
  if (at < 0 || at + 32 > out.length) throw new RangeError(`no room for a digest at ${at} in ${out.length} bytes`)
  out.set(nodeHash === undefined ? nobleSha256(data) : nodeDigest(nodeHash, data), at)
}

/** Which SHA-256 `sha256` uses: 'node' (OpenSSL) or 'noble' (browsers, or a Node without it). */
export const sha256Backend = (): 'node' | 'noble' => (nodeHash === undefined ? 'noble' : 'node')

/** @internal Tests only: SHA-256 through noble, the browsers' path. */
export const sha256Noble = (data: Uint8Array): Uint8Array => nobleSha256(data)

/**
 * HKDF-SHA256 (RFC 5869): extract-and-expand `length` bytes from `ikm`.
 *
 * @example const key = hkdf(sharedSecret, salt, utf8('petrel/v1/some-purpose'), 32)
 */
export function hkdf(ikm: Uint8Array, salt: Uint8Array | undefined, info: Uint8Array | undefined, length: number): Uint8Array {
  assertBytes(ikm, 'ikm')
  if (salt !== undefined) assertBytes(salt, 'salt')
  if (info !== undefined) assertBytes(info, 'info')
  // HKDF-SHA256 can produce at most 255 * 32 bytes.
  if (!Number.isSafeInteger(length) || length < 1 || length > 255 * 32) {
    throw new RangeError(`length must be an integer in 1..${255 * 32}, got ${length}`)
  }
  return nobleHkdf(nobleSha256, ikm, salt, info, length)
}

/**
 * Compares two byte arrays in time that depends only on their lengths, never on where they differ.
 * Lengths are treated as public: different lengths return false immediately.
 *
 * @example if (!constantTimeEqual(expectedMac, receivedMac)) throw new Error('bad mac')
 */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  assertBytes(a, 'a')
  assertBytes(b, 'b')
  if (a.length !== b.length) return false
  let diff = 0
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!
  return diff === 0
}

const HEX_CODES = Uint8Array.from('0123456789abcdef', (c) => c.charCodeAt(0))
// fromCharCode.apply takes its codes as arguments: stay well under engines' argument limits.
const HEX_CHUNK_BYTES = 8192

/** Little-endian bytes as an unsigned integer (Ed25519 scalars, X25519 u-coordinates). */
export function bytesToNumberLE(bytes: Uint8Array): bigint {
  let n = 0n
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]!)
  return n
}

/**
 * Lowercase hex encoding.
 *
 * @example toHex(Uint8Array.of(0xca, 0xfe)) // 'cafe'
 */
export function toHex(bytes: Uint8Array): string {
  assertBytes(bytes, 'bytes')
  // Character codes, then one flat string, as toBase64Url does: `+=` left a rope of ~26 nodes
  // (~0.8 KB) behind every 32-byte id a relay room kept, about 80 of them per room.
  let out = ''
  for (let start = 0; start < bytes.length; start += HEX_CHUNK_BYTES) {
    const end = Math.min(bytes.length, start + HEX_CHUNK_BYTES)
    const codes: number[] = new Array((end - start) * 2)
    for (let i = start, j = 0; i < end; i++, j += 2) {
      const b = bytes[i]!
      codes[j] = HEX_CODES[b >> 4]!
      codes[j + 1] = HEX_CODES[b & 15]!
    }
    const chunk = String.fromCharCode.apply(null, codes)
    out = start === 0 ? chunk : out + chunk
  }
  return out
}

function hexNibble(code: number): number {
  if (code >= 48 && code <= 57) return code - 48 // 0-9
  if (code >= 97 && code <= 102) return code - 87 // a-f
  return -1
}

/**
 * Decodes lowercase hex. Uppercase is rejected so that every byte string has exactly one
 * accepted text form (hex strings are used as map keys and identifiers).
 *
 * @example fromHex('cafe') // Uint8Array [0xca, 0xfe]
 * @throws PetrelError(Malformed) on odd length or any character outside [0-9a-f].
 */
export function fromHex(hex: string): Uint8Array {
  if (typeof hex !== 'string') throw new TypeError(`hex must be a string, got ${typeof hex}`)
  if (hex.length % 2 !== 0) throw new PetrelError(ErrorCode.Malformed, 'hex string has odd length')
  const out = new Uint8Array(hex.length / 2)
  for (let i = 0; i < out.length; i++) {
    const hi = hexNibble(hex.charCodeAt(2 * i))
    const lo = hexNibble(hex.charCodeAt(2 * i + 1))
    if (hi < 0 || lo < 0) throw new PetrelError(ErrorCode.Malformed, 'hex string has an invalid character')
    out[i] = (hi << 4) | lo
  }
  return out
}

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
const B64URL_CODES = Uint8Array.from(B64URL, (c) => c.charCodeAt(0))
const B64URL_DECODE = new Int8Array(128).fill(-1)
for (let i = 0; i < B64URL.length; i++) B64URL_DECODE[B64URL.charCodeAt(i)] = i

/**
 * Unpadded base64url (RFC 4648 §5) encoding, without Buffer/btoa so it behaves the same everywhere.
 *
 * @example toBase64Url(Uint8Array.of(0xfb, 0xff)) // '-_8'
 */
export function toBase64Url(bytes: Uint8Array): string {
  assertBytes(bytes, 'bytes')
  // Character codes first, one flat string at the end: `+=` builds a rope of one node per
  // step, which V8 keeps un-flattened (about 1.4 KB for one 43-character id, measured on the
  // relay). A plain array through fromCharCode.apply measured fastest too (0.22 µs for 63 bytes).
  const codes: number[] = []
  let i = 0
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!
    codes.push(B64URL_CODES[n >> 18]!, B64URL_CODES[(n >> 12) & 63]!, B64URL_CODES[(n >> 6) & 63]!, B64URL_CODES[n & 63]!)
  }
  const rest = bytes.length - i
  if (rest === 1) {
    const n = bytes[i]! << 16
    codes.push(B64URL_CODES[n >> 18]!, B64URL_CODES[(n >> 12) & 63]!)
  } else if (rest === 2) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8)
    codes.push(B64URL_CODES[n >> 18]!, B64URL_CODES[(n >> 12) & 63]!, B64URL_CODES[(n >> 6) & 63]!)
  }
  if (codes.length <= 8192) return String.fromCharCode.apply(null, codes)
  let out = ''
  for (let k = 0; k < codes.length; k += 8192) out += String.fromCharCode.apply(null, codes.slice(k, k + 8192))
  return out
}

/**
 * Whether `text` is the canonical unpadded base64url encoding of `bytes`, without decoding it
 * into a new array (the relay checks every envelope's sender against the connection's device
 * id). Runs through the whole string whatever it finds, like {@link constantTimeEqual}.
 *
 * @example matchesBase64Url(Uint8Array.of(0xfb, 0xff), '-_8') // true
 */
export function matchesBase64Url(bytes: Uint8Array, text: string): boolean {
  const rest = bytes.length % 3
  if (text.length !== ((bytes.length - rest) / 3) * 4 + (rest === 0 ? 0 : rest + 1)) return false
  let diff = 0
  let o = 0
  let i = 0
  for (; i + 3 < text.length; i += 4, o += 3) {
    const a = sextetAt(text, i)
    const b = sextetAt(text, i + 1)
    const c = sextetAt(text, i + 2)
    const d = sextetAt(text, i + 3)
    diff |= (a | b | c | d) & 0x80
    const n = (a << 18) | (b << 12) | (c << 6) | d
    diff |= ((n >> 16) & 0xff) ^ bytes[o]!
    diff |= ((n >> 8) & 0xff) ^ bytes[o + 1]!
    diff |= (n & 0xff) ^ bytes[o + 2]!
  }
  if (rest > 0) {
    const a = sextetAt(text, i)
    const b = sextetAt(text, i + 1)
    const c = rest === 2 ? sextetAt(text, i + 2) : 0
    diff |= (a | b | c) & 0x80
    const n = (a << 18) | (b << 12) | (c << 6)
    diff |= ((n >> 16) & 0xff) ^ bytes[o]!
    // Canonical: the bits after the last byte are zero.
    if (rest === 1) diff |= (n >> 8) & 0xff
    else diff |= (((n >> 8) & 0xff) ^ bytes[o + 1]!) | (n & 0xff)
  }
  return diff === 0
}

/** The sextet of the character at `i`, or 0x80 for a character outside base64url. */
function sextetAt(text: string, i: number): number {
  const c = text.charCodeAt(i)
  const v = c < 128 ? B64URL_DECODE[c]! : -1
  return v < 0 ? 0x80 : v
}

/**
 * Strict unpadded base64url decoding. Rejects padding, whitespace, the standard-alphabet `+`/`/`,
 * impossible lengths and non-zero trailing bits, so each byte string has exactly one accepted
 * encoding (tokens and ids compared as strings can't be aliased).
 *
 * @example fromBase64Url('-_8') // Uint8Array [0xfb, 0xff]
 * @throws PetrelError(Malformed) on any deviation from the canonical encoding.
 */
export function fromBase64Url(text: string): Uint8Array {
  if (typeof text !== 'string') throw new TypeError(`text must be a string, got ${typeof text}`)
  const rest = text.length % 4
  if (rest === 1) throw new PetrelError(ErrorCode.Malformed, 'base64url string has an impossible length')
  const out = new Uint8Array(((text.length - rest) / 4) * 3 + (rest === 0 ? 0 : rest - 1))
  const sextet = (i: number): number => {
    const c = text.charCodeAt(i)
    const v = c < 128 ? B64URL_DECODE[c]! : -1
    if (v < 0) throw new PetrelError(ErrorCode.Malformed, 'base64url string has an invalid character')
    return v
  }
  let o = 0
  let i = 0
  for (; i + 3 < text.length; i += 4) {
    const n = (sextet(i) << 18) | (sextet(i + 1) << 12) | (sextet(i + 2) << 6) | sextet(i + 3)
    out[o++] = n >> 16
    out[o++] = (n >> 8) & 0xff
    out[o++] = n & 0xff
  }
  if (rest === 2) {
    const a = sextet(i)
    const b = sextet(i + 1)
    if ((b & 0x0f) !== 0) throw new PetrelError(ErrorCode.Malformed, 'base64url string has non-zero trailing bits')
    out[o] = (a << 2) | (b >> 4)
  } else if (rest === 3) {
    const a = sextet(i)
    const b = sextet(i + 1)
    const c = sextet(i + 2)
    if ((c & 0x03) !== 0) throw new PetrelError(ErrorCode.Malformed, 'base64url string has non-zero trailing bits')
    out[o++] = (a << 2) | (b >> 4)
    out[o] = ((b & 0x0f) << 4) | (c >> 2)
  }
  return out
}

/** Fills `n` bytes from the platform CSPRNG (WebCrypto in browsers and Node ≥ 19). */
export function randomBytes(n: number): Uint8Array {
  const c = (globalThis as { crypto?: Crypto }).crypto
  if (c === undefined || typeof c.getRandomValues !== 'function') {
    throw new Error('No secure random source: globalThis.crypto.getRandomValues is unavailable')
  }
  if (n > POOL_TAKE_MAX) {
    // getRandomValues fills at most 65,536 bytes a call (a QuotaExceededError past that).
    const out = new Uint8Array(n)
    for (let at = 0; at < n; at += GET_RANDOM_VALUES_MAX) c.getRandomValues(out.subarray(at, at + GET_RANDOM_VALUES_MAX))
    return out
  }
  // Small requests (nonces, ids: several per message) come from a pool refilled 4 KiB at a
  // time: one system call instead of dozens. Every byte is handed out once and then zeroed.
  if (poolAt + n > pool.length) {
    c.getRandomValues(pool)
    poolAt = 0
  }
  const out = pool.slice(poolAt, poolAt + n)
  pool.fill(0, poolAt, poolAt + n)
  poolAt += n
  return out
}

const POOL_TAKE_MAX = 64
const GET_RANDOM_VALUES_MAX = 65_536
const pool = new Uint8Array(4096)
let poolAt = pool.length
