/**
 * Finding which of a writer's clock ranges holds a clock: the ranges of one Yjs client, sorted
 * by their first clock and not overlapping (an update's structs, a page's rows), by binary
 * search. A linear search per lookup made a page of n items against n ranges quadratic.
 */

/** A run of one client's clocks: `clock` … `clock + len - 1`. */
export interface ClockRun {
  clock: number
  len: number
}

/**
 * The run of `runs` (sorted by `clock`, not overlapping) that holds `clock`, if any.
 *
 * @example
 * ```ts
 * findRun([{ clock: 0, len: 2 }, { clock: 2, len: 5 }], 4) // { clock: 2, len: 5 }
 * ```
 */
export function findRun<T extends ClockRun>(runs: readonly T[] | undefined, clock: number): T | undefined {
  if (!runs) return undefined
  let lo = 0
  let hi = runs.length - 1
  while (lo <= hi) {
    const mid = (lo + hi) >> 1
    const run = runs[mid]!
    if (clock < run.clock) hi = mid - 1
    else if (clock >= run.clock + run.len) lo = mid + 1
    else return run
  }
  return undefined
}
