/**
 * The outer items a relay's `ack` or `refused` names (PROTOCOL §5), as envelope keys. The
 * ranges name this device's own writes, so a clock past what its outer document holds of that
 * client names nothing of ours and is left out: a relay is untrusted, and a range's length
 * is a varUint up to 2^53 on the wire, which was a loop of as many turns (a 13-byte `ack`
 * hung the device).
 */
import * as Y from 'yjs'
import { envelopeKey } from '../shared/outer-keys.js'

/**
 * @example
 * ```ts
 * for (const key of heldRangeKeys(outer, ack.ranges)) own.inEnvelope(key)
 * ```
 */
export function heldRangeKeys(outer: Y.Doc, ranges: ReadonlyArray<{ client: number; clock: number; len: number }>): string[] {
  const keys: string[] = []
  for (const range of ranges) {
    const end = Math.min(range.clock + range.len, Y.getState(outer.store, range.client))
    for (let clock = range.clock; clock < end; clock++) keys.push(envelopeKey(range.client, clock))
  }
  return keys
}
