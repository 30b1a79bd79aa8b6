/**
 * Small messages encoded with one reused lib0 encoder. `createEncoder()` starts every encoder
 * with a 100-byte buffer, which is above V8's limit for arrays kept inside the heap: each one
 * is a separately allocated (and later swept) backing store, 1.5 µs of every acknowledged
 * message on the relay's ingest path. `encodeSmall` returns a fresh copy; `viewSmall` lends a
 * view for as long as its callback runs.
 */
import * as encoding from 'lib0/encoding'

const scratch = encoding.createEncoder()
const KEPT_BYTES = 4096
let inUse = false

/**
 * Runs `write` on the shared encoder and returns a copy of what it wrote. A nested call (a
 * `write` that encodes another message) gets an encoder of its own.
 *
 * @example
 * ```ts
 * const bytes = encodeSmall((e) => encoding.writeVarUint(e, 42))
 * ```
 */
export function encodeSmall(write: (e: encoding.Encoder) => void): Uint8Array {
  return viewSmall(write, (bytes) => bytes.slice())
}

/**
 * Runs `write` on the shared encoder and hands what it wrote to `use` without copying it when
 * it fit the encoder's buffer: the view is valid only during `use` (hash it, do not keep it).
 *
 * @example
 * ```ts
 * viewSmall((e) => encoding.writeVarString(e, id), (bytes) => sha256Into(bytes, hashes, i * 32))
 * ```
 */
export function viewSmall<T>(write: (e: encoding.Encoder) => void, use: (bytes: Uint8Array) => T): T {
  if (inUse) {
    const e = encoding.createEncoder()
    write(e)
    return use(encoding.toUint8Array(e))
  }
  inUse = true
  try {
    scratch.cpos = 0
    scratch.bufs = []
    write(scratch)
    return use(scratch.bufs.length === 0 ? scratch.cbuf.subarray(0, scratch.cpos) : encoding.toUint8Array(scratch))
  } finally {
    inUse = false
    if (scratch.cbuf.length > KEPT_BYTES) scratch.cbuf = new Uint8Array(KEPT_BYTES)
    scratch.bufs = []
  }
}
