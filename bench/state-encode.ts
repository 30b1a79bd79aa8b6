/**
 * A history snapshot's encoding: Petrel's `encodeState` (shared/state-encoder.ts, Yjs's V1
 * encoder with var-string.ts's writers) and `encodeInPlace` (the same into a buffer kept between
 * encodings, as the replica thread encodes) against `Y.encodeStateAsUpdate` of the same
 * document, the same bytes, alternating in the same run. The document is benchmark 3's conversation:
 * `BENCH_STATE_MESSAGES` (40,000) messages of an 87-character text, written 40 to a
 * transaction as a sender's batches are, with the stored fields a message has (message id key,
 * device, batch entry). Reference: Yjs's own encoding.
 */
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import { encodeState, stateEncoderFor } from '../src/shared/state-encoder.js'
import { lib0StringWriters } from '../src/shared/var-string.js'
import { conversationDoc, fullGc, median } from './common.js'

export interface StateEncodeResult {
  messages: number
  bytes: number
  /** Median ms to encode the whole document: a fresh array, and in place (the replica's way). */
  petrelMs: number
  inPlaceMs: number
  yjsMs: number
}

export function stateEncode(messages = Number(process.env.BENCH_STATE_MESSAGES ?? 40_000), rounds = 7): StateEncodeResult {
  const { doc } = conversationDoc(messages)
  const reference = Y.encodeStateAsUpdate(doc)
  const { encodeInPlace } = stateEncoderFor(Y, lib0StringWriters(encoding))
  const same = (bytes: Uint8Array) => Buffer.compare(Buffer.from(reference), Buffer.from(bytes)) === 0
  if (!same(encodeState(doc)) || !same(encodeInPlace(doc))) throw new Error('stateEncode: Petrel wrote other bytes than Yjs')
  // Each from a collected heap: the last one's 12 MB of garbage is not the next one's cost.
  const time = (f: () => Uint8Array): number => {
    fullGc()
    const t0 = performance.now()
    f()
    return performance.now() - t0
  }
  const petrel: number[] = []
  const inPlace: number[] = []
  const yjs: number[] = []
  // Alternating; the first round warms both up and is not kept.
  for (let r = 0; r <= rounds; r++) {
    const p = time(() => encodeState(doc))
    const i = time(() => encodeInPlace(doc))
    const y = time(() => Y.encodeStateAsUpdate(doc))
    if (r === 0) continue
    petrel.push(p)
    inPlace.push(i)
    yjs.push(y)
  }
  doc.destroy()
  return { messages, bytes: reference.length, petrelMs: median(petrel), inPlaceMs: median(inPlace), yjsMs: median(yjs) }
}
