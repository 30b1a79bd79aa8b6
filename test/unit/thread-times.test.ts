import { existsSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { describeThreadTimes, ownThreadId, readThreadTimes } from '../../bench/thread-times.js'

const linux = existsSync('/proc/self/task')

describe('thread times (bench diagnosis)', () => {
  it.skipIf(!linux)("reads this thread's CPU, which grows while it works", () => {
    const tid = ownThreadId()
    expect(tid).toBeGreaterThan(0)
    const before = readThreadTimes().get(tid!)
    expect(before).toBeDefined()
    const until = performance.now() + 30
    let x = 0
    while (performance.now() < until) x += Math.sqrt(x + 1)
    const after = readThreadTimes().get(tid!)!
    expect(x).toBeGreaterThan(0)
    expect(after.runMs - before!.runMs).toBeGreaterThan(10)
    expect(after.slices).toBeGreaterThanOrEqual(before!.slices)
  })

  it('lists the threads that ran, busiest first, by name where known', () => {
    const t = (runMs: number, waitMs: number, slices: number) => ({ runMs, waitMs, slices })
    const before = new Map([
      [1, t(100, 10, 5)],
      [2, t(50, 0, 1)],
      [3, t(7, 1, 1)],
    ])
    const after = new Map([
      [1, t(130, 20, 9)],
      [2, t(150, 40, 11)],
      [3, t(8, 1, 2)],
      [4, t(12, 3, 2)],
    ])
    expect(describeThreadTimes(before, after, new Map([[2, 'bob']]))).toEqual([
      'bob: ran 100 ms, waited for a core 40 ms over 10 runs',
      'thread 1: ran 30 ms, waited for a core 10 ms over 4 runs',
      'thread 4: ran 12 ms, waited for a core 3 ms over 2 runs',
    ])
  })
})
