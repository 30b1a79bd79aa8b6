/**
 * lib0's `writeVarString`, the same bytes, written straight into the encoder's buffer.
 *
 * ```
 * varString := varUint(utf8ByteLength) • utf8Bytes
 * ```
 * lib0 (0.2.x) encodes a string into a shared buffer and then copies it into the encoder one
 * byte at a time, each with its own bounds check. A sender hashes every message's signed bytes
 * (room, id, text, device: ~230 characters, message-signature.ts), and in benchmark 3 that
 * was 5.6% of the sending device's thread (twenty-sixth session, BENCHMARKS.md). Here
 * `TextEncoder.encodeInto` writes into the encoder's own buffer after room for the length is
 * reserved; a length that needs fewer bytes than reserved moves the string down by one. (A
 * JavaScript loop for ASCII was slower than `encodeInto` from ~40 characters on: 3–4 ns a
 * character against ~150 ns a call.)
 */
import * as encoding from 'lib0/encoding'

const utf8 = new TextEncoder()
/** UTF-8 is at most 3 bytes per UTF-16 code unit. Beyond 2 bytes of length, lib0's path. */
const MAX_FAST_UNITS = Math.floor(0x3fff / 3)

/**
 * Write `s` as lib0's `writeVarString` does.
 *
 * @example
 * ```ts
 * const e = encoding.createEncoder()
 * writeVarString(e, 'héllo') // the bytes of encoding.writeVarString(e, 'héllo')
 * ```
 */
export function writeVarString(e: encoding.Encoder, s: string): void {
  const units = s.length
  if (units > MAX_FAST_UNITS) {
    encoding.writeVarString(e, s)
    return
  }
  const most = units * 3
  const reserved = most < 0x80 ? 1 : 2
  encoding.verifyLen(e, reserved + most)
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
