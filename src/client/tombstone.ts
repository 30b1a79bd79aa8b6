/**
 * A tombstone for an inner update the relay refused for good. Receivers never got that
 * update, and Yjs holds back every later change of the same client until the gap is filled;
 * the tombstone fills it with the same items, already deleted and without content, so the
 * author's later messages flow again while the failed one stays on the author's device only.
 *
 * Each item keeps its info flags, origins, parent and key, and its content becomes
 * ContentDeleted (ref 1) of the same clock length; the delete set marks each item's range
 * deleted (never a skipped range between them).
 */
import * as encoding from 'lib0/encoding'
import { buildUpdate, type ParsedDeleteSet, parseUpdate, type StructRun } from '../shared/yjs-v1.js'

export function tombstoneUpdate(update: Uint8Array): Uint8Array {
  const parsed = parseUpdate(update, { maxBytes: update.length })
  const runs: StructRun[] = []
  const deleteSet: ParsedDeleteSet[] = []
  for (const group of parsed.groups) {
    const e = encoding.createEncoder()
    for (const s of group.structs) {
      if (s.kind !== 'item') {
        encoding.writeUint8Array(e, update.subarray(s.start, s.end))
        continue
      }
      encoding.writeUint8(e, (s.info & 0xe0) | 1)
      encoding.writeUint8Array(e, update.subarray(s.start + 1, s.contentStart))
      encoding.writeVarUint(e, s.len)
    }
    runs.push({ client: group.client, startClock: group.startClock, count: group.structs.length, bytes: encoding.toUint8Array(e) })
    // Only the items' own clocks: a skip inside the update stands for other updates, which the
    // tombstone must not delete at receivers.
    const ranges: Array<[number, number]> = []
    for (const s of group.structs) {
      if (s.kind !== 'item') continue
      const prev = ranges[ranges.length - 1]
      if (prev && prev[0] + prev[1] === s.clock) prev[1] += s.len
      else ranges.push([s.clock, s.len])
    }
    if (ranges.length > 0) deleteSet.push({ client: group.client, ranges })
  }
  return buildUpdate(runs, deleteSet)
}
