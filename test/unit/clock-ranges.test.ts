import { describe, expect, it } from 'vitest'
import { findRun } from '../../src/shared/clock-ranges.js'

describe('finding the run that holds a clock', () => {
  const runs = [
    { clock: 0, len: 2, name: 'a' },
    { clock: 2, len: 5, name: 'b' },
    { clock: 10, len: 1, name: 'c' },
  ]

  it('finds the run for every clock inside one, and none in a gap, before, after or without runs', () => {
    const expected = ['a', 'a', 'b', 'b', 'b', 'b', 'b', undefined, undefined, undefined, 'c', undefined]
    for (const [clock, name] of expected.entries()) expect(findRun(runs, clock)?.name, `clock ${clock}`).toBe(name)
    expect(findRun([], 0)).toBeUndefined()
    expect(findRun(undefined, 0)).toBeUndefined()
  })

  it('agrees with a linear search over 10,000 runs with gaps', () => {
    const many = Array.from({ length: 10_000 }, (_, i) => ({ clock: i * 3, len: 1 + (i % 2) }))
    for (let clock = 0; clock < 30_010; clock += 7) {
      expect(findRun(many, clock)).toBe(many.find((r) => clock >= r.clock && clock < r.clock + r.len))
    }
  })
})
