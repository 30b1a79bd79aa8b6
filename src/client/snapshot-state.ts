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
 * - A run of GC structs that ends a client's structs is **withheld**: a member's snapshot could
 *   claim another member's next clocks as collected garbage, and Yjs would then drop that
 *   member's later changes as duplicates, silently, on every device that applies it. Honest
 *   snapshots end a client with GC only where its last changes were inside a deleted nested
 *   type. The withheld run is applied when a change of that client arrives, only up to where the
 *   change begins (`withheldUpTo`): an honest run whole, a forged one not at all.
 */
import * as encoding from 'lib0/encoding'
import { buildUpdate, type ParsedDeleteSet, parseUpdate, type StructRun } from '../shared/yjs-v1.js'

/** Clocks `[start, end)` of `client` a snapshot ended with as GC, not applied with it. */
export interface WithheldRun {
  client: number
  start: number
  end: number
}

/** A snapshot's state as it is applied, and what was left out of it. */
export interface CheckedSnapshotState {
  state: Uint8Array
  /** Delete ranges (or their parts) past the structs of their client, left out. */
  clipped: number
  /** GC runs that ended a client's structs, withheld until a change of that client shows how far they go. */
  withheld: WithheldRun[]
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
  const runs: StructRun[] = []
  const withheld: WithheldRun[] = []
  for (const group of parsed.groups) {
    const last = group.structs[group.structs.length - 1]
    const end = last ? last.clock + last.len : group.startClock
    ends.set(group.client, end)
    let keep = group.structs.length
    while (keep > 0 && group.structs[keep - 1]!.kind === 'gc') keep--
    if (keep < group.structs.length) withheld.push({ client: group.client, start: group.structs[keep]!.clock, end })
    if (keep > 0) runs.push({ client: group.client, startClock: group.startClock, count: keep, bytes: state.subarray(group.structs[0]!.start, group.structs[keep - 1]!.end) })
  }
  const starts = new Map(withheld.map((w) => [w.client, w.start]))
  let clipped = 0
  const kept: ParsedDeleteSet[] = []
  for (const { client, ranges } of parsed.deleteSet) {
    const end = ends.get(client) ?? 0
    // What a withheld run covers is deleted anyway (GC): its deletions go with it.
    const applied = starts.get(client) ?? end
    const inside: Array<[number, number]> = []
    for (const [clock, len] of ranges) {
      if (clock + len > end) clipped++
      const to = Math.min(clock + len, applied)
      if (to > clock) inside.push([clock, to - clock])
    }
    if (inside.length > 0) kept.push({ client, ranges: inside })
  }
  if (clipped === 0 && withheld.length === 0) return { state, clipped, withheld }
  return { state: buildUpdate(runs, kept), clipped, withheld }
}

/**
 * The part of a withheld run a change of its client starting at `clock` shows to be real: the
 * clocks before it, as one GC struct, or undefined when none are.
 *
 * @example
 * ```ts
 * const gc = withheldUpTo(run, firstClockOfChange)
 * if (gc) Y.applyUpdate(doc, gc)   // then the change
 * ```
 */
export function withheldUpTo(run: WithheldRun, clock: number): Uint8Array | undefined {
  const to = Math.min(clock, run.end)
  if (to <= run.start) return undefined
  const e = encoding.createEncoder()
  encoding.writeUint8(e, 0)
  encoding.writeVarUint(e, to - run.start)
  return buildUpdate([{ client: run.client, startClock: run.start, count: 1, bytes: encoding.toUint8Array(e) }])
}
