/**
 * The checks a history snapshot's inner state passes before a device applies it (PROTOCOL
 * §11.4). The state is what its writer's document held, encoded whole: every client's structs
 * from clock 0, and a delete set drawn from those structs only.
 *
 * - Its size bounds the work, not a count of structs: a conversation of 110,000 messages is
 *   110,000 structs, over the 100,000 the parser allows one network update, and every fresh
 *   device refused the snapshot the relay had already compacted under (the history was gone).
 * - A delete range past the structs it names is left out: Yjs keeps such a range pending and
 *   deletes the changes it names when they arrive, so a member's snapshot could delete what
 *   another member writes afterwards, on every device that applies it. Refusing the whole
 *   snapshot instead would lose the compacted history, and with it every later change of the
 *   clients it holds (they would wait for it in Yjs).
 */
import * as encoding from 'lib0/encoding'
import { parseUpdate } from '../shared/yjs-v1.js'

/** A snapshot's state as it is applied, and how many delete ranges were left out of it. */
export interface CheckedSnapshotState {
  state: Uint8Array
  /** Delete ranges (or their parts) past the structs of their client, left out. */
  clipped: number
}

/**
 * `state` checked (throws a `malformed` PetrelError if it is not a well-formed update) and
 * with nothing deleted past its own structs.
 *
 * @example
 * ```ts
 * const { state: safe, clipped } = checkSnapshotState(state)
 * if (clipped > 0) report('the snapshot deleted changes it does not hold; left out')
 * Y.applyUpdate(doc, safe)
 * ```
 */
export function checkSnapshotState(state: Uint8Array): CheckedSnapshotState {
  // Every struct and delete range takes at least a byte.
  const parsed = parseUpdate(state, { maxBytes: state.length, maxStructs: state.length, maxDeleteRanges: state.length })
  const ends = new Map<number, number>()
  for (const group of parsed.groups) {
    const last = group.structs[group.structs.length - 1]
    ends.set(group.client, last ? last.clock + last.len : group.startClock)
  }
  let clipped = 0
  const kept: Array<{ client: number; ranges: Array<[number, number]> }> = []
  for (const { client, ranges } of parsed.deleteSet) {
    const end = ends.get(client) ?? 0
    const inside: Array<[number, number]> = []
    for (const [clock, len] of ranges) {
      if (clock + len <= end) inside.push([clock, len])
      else {
        clipped++
        if (clock < end) inside.push([clock, end - clock])
      }
    }
    if (inside.length > 0) kept.push({ client, ranges: inside })
  }
  if (clipped === 0) return { state, clipped }
  const e = encoding.createEncoder()
  encoding.writeUint8Array(e, state.subarray(0, parsed.deleteSetStart))
  encoding.writeVarUint(e, kept.length)
  for (const { client, ranges } of kept) {
    encoding.writeVarUint(e, client)
    encoding.writeVarUint(e, ranges.length)
    for (const [clock, len] of ranges) {
      encoding.writeVarUint(e, clock)
      encoding.writeVarUint(e, len)
    }
  }
  return { state: encoding.toUint8Array(e), clipped }
}
