/**
 * A Yjs document's whole state as one update: the bytes of `Y.encodeStateAsUpdate`, written
 * with var-string.ts's writers in place of lib0's.
 *
 * Yjs's V1 encoder writes every map key and every string in a message's value (`writeAny`)
 * through lib0's byte-at-a-time string copy. A history snapshot writes every message once more
 * (~11.7 MB at 40,000 of benchmark 3's messages), and that copy was ~a quarter of the replica
 * thread's time. `UpdateEncoderV1` is Yjs's public class; the subclass below changes only how
 * `writeString`, `writeKey` and `writeAny` put their bytes, not which bytes (unit-tested against
 * Yjs's own encoding, `test/unit/state-encoder.test.ts`).
 *
 * A document holding updates that wait for missing history (`store.pendingStructs`,
 * `pendingDs`) is encoded by Yjs itself: Yjs merges what waits into the result only for its own
 * encoder classes.
 *
 * Like lib0StringWriters, {@link stateEncoderFor} closes over nothing but its arguments: the
 * replica thread runs its source text against the CommonJS Yjs it loads.
 */
import * as Y from 'yjs'
import { type Lib0StringWriters, writeAny, writeVarString } from './var-string.js'

/** What the encoder uses of Yjs. */
export interface YjsStateApi {
  UpdateEncoderV1: typeof Y.UpdateEncoderV1
  encodeStateAsUpdate(doc: Y.Doc, stateVector?: Uint8Array): Uint8Array
  encodeStateAsUpdateV2(doc: Y.Doc, stateVector?: Uint8Array, encoder?: Y.UpdateEncoderV1): Uint8Array
}

/** Whole-state encodings for one copy of Yjs. */
export interface StateEncoder {
  /** The bytes of `Y.encodeStateAsUpdate(doc, stateVector)`, in an array of their own. */
  encode(doc: Y.Doc, stateVector?: Uint8Array): Uint8Array
  /**
   * The same bytes of the whole state, written into a buffer this encoder keeps between calls:
   * a view, valid until the next call, for a caller that only reads them (deflates them, copies
   * them out). The buffer grows to twice an encoding that did not fit, so it holds up to twice
   * the largest state encoded.
   */
  encodeInPlace(doc: Y.Doc): Uint8Array
}

/**
 * The encoder for one copy of Yjs and the writers for its copy of lib0.
 *
 * `encodeInPlace` is for the replica thread, which encodes one snapshot after another: written
 * into fresh memory, an encoding paid lib0's buffer doublings (twice its size allocated) and its
 * final copy, and each fresh page faulted in. On this project's VMs that was as much as the
 * writing itself (40,000 messages, 11.7 MB: 37 ms in place against 56–91 ms fresh).
 *
 * @example
 * ```ts
 * const { encode, encodeInPlace } = stateEncoderFor(Y, lib0StringWriters(encoding))
 * encode(doc) // the bytes of Y.encodeStateAsUpdate(doc)
 * deflateRawSync(encodeInPlace(doc)) // the same bytes, read before the next encode
 * ```
 */
export function stateEncoderFor(Yjs: YjsStateApi, writers: Lib0StringWriters): StateEncoder {
  class DirectStringsEncoderV1 extends Yjs.UpdateEncoderV1 {
    constructor(private readonly into?: Uint8Array) {
      super()
      if (into) this.restEncoder.cbuf = into as Uint8Array<ArrayBuffer>
    }
    override writeString(s: string): void {
      writers.writeVarString(this.restEncoder, s)
    }
    override writeKey(key: string): void {
      writers.writeVarString(this.restEncoder, key)
    }
    override writeAny(value: unknown): void {
      writers.writeAny(this.restEncoder, value)
    }
    override toUint8Array(): Uint8Array {
      const e = this.restEncoder
      // All of it within the buffer it was given: a view of it, not lib0's copy.
      return this.into && e.bufs.length === 0 ? e.cbuf.subarray(0, e.cpos) : super.toUint8Array()
    }
  }
  // Updates waiting for missing history are merged into the result by Yjs for its own classes only.
  const waiting = (doc: Y.Doc) => doc.store.pendingStructs !== null || doc.store.pendingDs !== null
  let scratch = new Uint8Array(64 * 1024)
  return {
    encode: (doc, stateVector) => (waiting(doc) ? Yjs.encodeStateAsUpdate(doc, stateVector) : Yjs.encodeStateAsUpdateV2(doc, stateVector, new DirectStringsEncoderV1())),
    encodeInPlace: (doc) => {
      if (waiting(doc)) return Yjs.encodeStateAsUpdate(doc)
      const encoder = new DirectStringsEncoderV1(scratch)
      const state = Yjs.encodeStateAsUpdateV2(doc, undefined, encoder)
      // Twice what did not fit: snapshots come each ≥ 1.5 × the last (snapshot-schedule.ts), and
      // with less room every one of them overflowed into lib0's doublings and copy.
      if (encoder.restEncoder.bufs.length > 0) scratch = new Uint8Array(state.length * 2)
      return state
    },
  }
}

/**
 * The bytes of `Y.encodeStateAsUpdate(doc, stateVector)`, written faster.
 *
 * @example
 * ```ts
 * const merged = encodeState(doc) // a compacted log row, a snapshot's state
 * ```
 */
export const encodeState: (doc: Y.Doc, stateVector?: Uint8Array) => Uint8Array = stateEncoderFor(Y, { writeVarString, writeAny }).encode
