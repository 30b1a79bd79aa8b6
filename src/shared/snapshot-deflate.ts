/**
 * Compression of a history snapshot's inner state (raw DEFLATE, RFC 1951) before it is sealed.
 * A snapshot repeats the same ids in every message (the key's user id, the device id, the
 * batch id): 60,000 messages were 19 MB, ~5× less deflated, and every byte of a snapshot is
 * sealed, signed, sent, stored by the relay and by each device, and held in their outer
 * documents. At 10,000 messages a second the uncompressed parts were most of what a snapshot
 * cost (BENCHMARKS.md, fourteenth session).
 *
 * Node: its zlib. A conversation's snapshot is deflated on the history replica's thread, where it
 * is encoded (history-replica.ts); `deflateState` (where there is no such thread, or a state
 * given) deflates asynchronously on libuv's thread pool. Inflating is at once
 * ({@link inflateStateSync}). Elsewhere: the platform's CompressionStream / DecompressionStream
 * ('deflate-raw'). Where neither exists, {@link canDeflate} is false and
 * snapshots are sealed uncompressed (snapshot-seal.ts, version 1).
 *
 * Inflating is bounded: the sealed plaintext declares the state's length, and output past it
 * (or short of it) is refused, so a member's "zip bomb" costs at most that many bytes.
 */
import { ErrorCode, PetrelError } from './errors.js'
import { readCapped } from './read-capped.js'

/** The largest inner state a snapshot may declare (1 GiB): a bound on what inflating allocates. */
export const MAX_SNAPSHOT_STATE_BYTES = 2 ** 30
/** DEFLATE's own limit: one byte of input never expands past this many bytes of output. */
const MAX_DEFLATE_RATIO = 1032

interface NodeZlib {
  deflateRaw(buf: Uint8Array, options: { level: number }, cb: (err: Error | null, out: Uint8Array) => void): void
  inflateRaw(buf: Uint8Array, options: { maxOutputLength: number }, cb: (err: Error | null, out: Uint8Array) => void): void
  inflateRawSync(buf: Uint8Array, options: { maxOutputLength: number }): Uint8Array
}

const zlib = ((): NodeZlib | undefined => {
  try {
    const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process
    return proc?.getBuiltinModule?.('node:zlib') as NodeZlib | undefined
  } catch {
    return undefined
  }
})()

type Streams = { CompressionStream?: new (format: string) => TransformStream<Uint8Array, Uint8Array>; DecompressionStream?: new (format: string) => TransformStream<Uint8Array, Uint8Array> }
const streams = globalThis as unknown as Streams

/** @internal Which implementation: Node's zlib, or the platform's compression streams (tests pick each). */
export type Via = 'zlib' | 'streams'

/** Whether this platform compresses snapshots. */
export const canDeflate = zlib !== undefined || (streams.CompressionStream !== undefined && streams.DecompressionStream !== undefined)

/**
 * Raw DEFLATE of `state`, at zlib's fastest level (on a snapshot's repetitive bytes it gave the
 * ratio of level 6 at 2.5× the speed).
 *
 * @example const deflated = await deflateState(Y.encodeStateAsUpdate(doc))
 */
export async function deflateState(state: Uint8Array, via: Via = zlib ? 'zlib' : 'streams', pause?: () => Promise<unknown>): Promise<Uint8Array> {
  if (via === 'zlib' && zlib) {
    const out = await new Promise<Uint8Array>((resolve, reject) => zlib.deflateRaw(state, { level: 1 }, (err, out) => (err ? reject(err) : resolve(out))))
    return plainView(out)
  }
  if (!streams.CompressionStream) throw new PetrelError(ErrorCode.VersionMismatch, 'this platform cannot compress')
  return drain(state, new streams.CompressionStream('deflate-raw'), Number.POSITIVE_INFINITY, pause)
}

/**
 * The state `deflated` holds, which must be exactly `length` bytes: anything else (a corrupt
 * stream, more or fewer bytes, a length no DEFLATE stream of this size can reach) is a
 * PetrelError `malformed`, found without inflating past `length`.
 *
 * @example const state = await inflateState(deflated, declaredLength)
 */
export async function inflateState(deflated: Uint8Array, length: number, via: Via = zlib ? 'zlib' : 'streams'): Promise<Uint8Array> {
  checkLength(deflated, length)
  if (inflateGate) await inflateGate
  let out: Uint8Array
  try {
    if (via === 'zlib' && zlib) {
      const buf = await new Promise<Uint8Array>((resolve, reject) => zlib.inflateRaw(deflated, { maxOutputLength: length }, (err, out) => (err ? reject(err) : resolve(out))))
      out = plainView(buf)
    } else {
      if (!streams.DecompressionStream) throw new PetrelError(ErrorCode.VersionMismatch, 'this platform cannot inflate a compressed snapshot')
      out = await drain(deflated, new streams.DecompressionStream('deflate-raw'), length)
    }
  } catch (cause) {
    if (cause instanceof PetrelError) throw cause
    throw new PetrelError(ErrorCode.Malformed, `snapshot does not inflate: ${(cause as Error).message}`, { cause })
  }
  return checkOutput(out, length)
}

/**
 * {@link inflateState} at once, where the platform inflates synchronously (Node's zlib:
 * ~1 GB/s, a few ms for a snapshot of 10,000 messages); undefined elsewhere. A fresh device
 * then applies the snapshot in the pass that completed it, instead of holding the envelopes
 * after it (and checking their signatures again) until an asynchronous inflate is done.
 *
 * @example const state = inflateStateSync(deflated, declaredLength) ?? (await inflateState(deflated, declaredLength))
 */
export function inflateStateSync(deflated: Uint8Array, length: number): Uint8Array | undefined {
  if (!zlib || !syncInflate) return undefined
  checkLength(deflated, length)
  let buf: Uint8Array
  try {
    buf = zlib.inflateRawSync(deflated, { maxOutputLength: length })
  } catch (cause) {
    throw new PetrelError(ErrorCode.Malformed, `snapshot does not inflate: ${(cause as Error).message}`, { cause })
  }
  return checkOutput(plainView(buf), length)
}

let syncInflate = true
let inflateGate: Promise<unknown> | undefined

/** @internal Tests: asynchronous inflating first waits for `gate` (undefined: it does not wait), so a catch-up can end while a snapshot inflates. */
export function setInflateGate(gate: Promise<unknown> | undefined): void {
  inflateGate = gate
}

/** @internal Tests: make Node inflate only asynchronously, as a browser does (true restores it). */
export function setSyncInflate(enabled: boolean): void {
  syncInflate = enabled
}

/** A Node Buffer as a plain Uint8Array over the same bytes (no copy). */
const plainView = (buf: Uint8Array): Uint8Array => new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength)

function checkLength(deflated: Uint8Array, length: number): void {
  if (!Number.isSafeInteger(length) || length < 1 || length > MAX_SNAPSHOT_STATE_BYTES || length > deflated.length * MAX_DEFLATE_RATIO) {
    throw new PetrelError(ErrorCode.Malformed, `snapshot declares an impossible length (${length} bytes from ${deflated.length})`)
  }
}

function checkOutput(out: Uint8Array, length: number): Uint8Array {
  if (out.length !== length) throw new PetrelError(ErrorCode.Malformed, `snapshot inflates to ${out.length} bytes, not the ${length} it declares`)
  return out
}

/** Input is fed a step at a time, with `pause` between steps where one is given. */
const STEP_BYTES = 256 * 1024

/**
 * Push `input` through a (de)compression stream; more than `max` bytes out stops it with an
 * error. Fed in steps: a browser compresses on the thread it is fed from, so one 20 MB write
 * would hold the app's thread for its whole length; `pause` (the snapshot's pacing) runs
 * between steps.
 */
async function drain(input: Uint8Array, stream: TransformStream<Uint8Array, Uint8Array>, max: number, pause?: () => Promise<unknown>): Promise<Uint8Array> {
  const writer = stream.writable.getWriter()
  // Errors surface on the readable side; the writing side only stops with it.
  void (async () => {
    for (let at = 0; at < input.length; at += STEP_BYTES) {
      if (at > 0 && pause) await pause()
      await writer.write(input.subarray(at, at + STEP_BYTES))
    }
    await writer.close()
  })().catch(() => {})
  const out = await readCapped(stream.readable, max)
  if (out === 'too-large') throw new PetrelError(ErrorCode.Malformed, `snapshot inflates past the ${max} bytes it declares`)
  return out
}
