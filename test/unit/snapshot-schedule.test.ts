import { describe, expect, it } from 'vitest'
import { SnapshotSchedule } from '../../src/client/snapshot-schedule.js'

interface Written {
  /** Relay rows it covered. */
  rows: number
  start: number
  end: number
}

/**
 * A conversation of `messages` sends, `perRow` to a relay row, one device snapshotting whenever
 * the schedule says so (asked on each row); each snapshot takes `msPerRow` per row it covers
 * while the sends go on at `rowsPerMs`.
 */
function simulate(schedule: SnapshotSchedule, messages: number, perRow: number, msPerRow = 0, rowsPerMs = 1): Written[] {
  const written: Written[] = []
  let since = 0
  let coveredSeq = 0
  let running: Written | undefined
  for (let row = 1; row <= messages / perRow; row++) {
    const now = row / rowsPerMs
    if (running && now >= running.end) {
      schedule.finished(running.end)
      running = undefined
    }
    since += perRow
    if (!schedule.due({ since, cursor: row, coveredSeq, now })) continue
    schedule.started(now)
    schedule.working(now)
    since = 0
    coveredSeq = row
    running = { rows: row, start: now, end: now + row * msPerRow }
    written.push(running)
  }
  return written
}

const rowsOf = (written: Written[]) => written.map((w) => w.rows)

/** A schedule after one snapshot (it started, its work began, it finished): is the next due at `now`? */
function afterOne(started: number, working: number | undefined, finished: number): (now: number) => boolean {
  const schedule = new SnapshotSchedule({ every: 10 })
  schedule.started(started)
  if (working !== undefined) schedule.working(working)
  schedule.finished(finished)
  return (now) => schedule.due({ since: 100, cursor: 100, coveredSeq: 0, now })
}

describe('snapshot schedule', () => {
  it('writes the first snapshot after `every` updates, whatever the rows', () => {
    const schedule = new SnapshotSchedule({ every: 5000 })
    expect(schedule.due({ since: 4999, cursor: 100, coveredSeq: 0, now: 0 })).toBe(false)
    expect(schedule.due({ since: 5000, cursor: 100, coveredSeq: 0, now: 0 })).toBe(true)
  })

  it('never writes one with `every` 0 (compaction off)', () => {
    expect(new SnapshotSchedule({ every: 0 }).due({ since: 1e9, cursor: 1e9, coveredSeq: 0, now: 0 })).toBe(false)
  })

  it('writes one at a time: not while its last is being written', () => {
    const schedule = new SnapshotSchedule({ every: 10 })
    schedule.started(0)
    expect(schedule.due({ since: 100, cursor: 100, coveredSeq: 0, now: 1 })).toBe(false)
    schedule.finished(0)
    expect(schedule.due({ since: 100, cursor: 100, coveredSeq: 0, now: 1 })).toBe(true)
  })

  it('waits until the rows since the last snapshot are half of what it covered', () => {
    const schedule = new SnapshotSchedule({ every: 10 })
    expect(schedule.due({ since: 500, cursor: 1499, coveredSeq: 1000, now: 0 })).toBe(false)
    expect(schedule.due({ since: 500, cursor: 1500, coveredSeq: 1000, now: 0 })).toBe(true)
  })

  it('counts the time from when its work began, not the wait for incoming rows before it', () => {
    const next = afterOne(0, 3000, 3300)
    expect(next(4499)).toBe(false)
    expect(next(4500)).toBe(true)
  })

  it('holds nothing back after a snapshot that stopped before any work (nothing to cover)', () => {
    // Waited 5 s for incoming rows, then had nothing to write.
    expect(afterOne(0, undefined, 5000)(5000)).toBe(true)
  })

  it('counts a snapshot that spanned a sleeping device or a clock jump as a minute of work at most', () => {
    const hours = 10 * 3_600_000
    expect(afterOne(0, 0, hours)(hours + 4 * 60_000)).toBe(true)
  })

  it('does not count its own pauses as work', async () => {
    const schedule = new SnapshotSchedule({ every: 10 })
    const t0 = Date.now()
    schedule.started(t0)
    schedule.working(t0)
    // A step of ~10 ms, then a pause of ~40 ms.
    const until = performance.now() + 10
    while (performance.now() < until) {}
    await schedule.pause()
    const end = Date.now()
    expect(end - t0).toBeGreaterThanOrEqual(45)
    schedule.finished(end)
    // Had the pause (≥ 40 ms) counted as work, the next would wait 4 × (end − t0); it waits
    // 4 × the step alone, at least 160 ms less.
    expect(schedule.due({ since: 100, cursor: 100, coveredSeq: 0, now: end + 4 * (end - t0) - 100 })).toBe(true)
  })

  it('keeps snapshots to a fifth of the time: after one of 300 ms, the next waits 1,200 ms', () => {
    const next = afterOne(1000, 1000, 1300)
    expect(next(2499)).toBe(false)
    expect(next(2500)).toBe(true)
  })

  it('says how long until that wait is over (a snapshot given up is tried again then)', () => {
    const schedule = new SnapshotSchedule({ every: 10 })
    expect(schedule.waitMs(0)).toBe(0)
    schedule.started(1000)
    schedule.working(1000)
    schedule.finished(1300)
    expect(schedule.waitMs(1300)).toBe(1200)
    expect(schedule.waitMs(2000)).toBe(500)
    expect(schedule.waitMs(9000)).toBe(0)
  })

  it('writes O(log n) snapshots over a long conversation, not one per `every` messages', () => {
    // One million messages, ten to a row: a fixed spacing of 5,000 wrote 200 snapshots, the
    // last ones of all 100,000 rows (20 million rows written in snapshots in all).
    const covered = rowsOf(simulate(new SnapshotSchedule({ every: 5000 }), 1_000_000, 10))
    expect(covered.length).toBeLessThanOrEqual(14)
    const total = covered.reduce((a, b) => a + b, 0)
    // A geometric series: all of them together, at most 3 × the last (growth 1.5).
    expect(total).toBeLessThanOrEqual(3 * covered.at(-1)!)
    // The tail a new device gets as envelopes stays under a third of the history.
    expect(100_000 - covered.at(-1)!).toBeLessThan(100_000 / 3)
  })

  it('stays with every `every` messages while the history is short', () => {
    // 3 snapshots in 15,000 messages at 1 per row, as with a fixed spacing.
    expect(rowsOf(simulate(new SnapshotSchedule({ every: 5000 }), 15_000, 1))).toEqual([5000, 10_000, 15_000])
  })

  it('at a send rate that makes snapshots take as long as the spacing, waits four times as long as each took', () => {
    // Each snapshot takes 0.2 ms per row it covers, rows come at 10 per ms: by the spacing
    // rules alone, the next starts as the last ends.
    const written = simulate(new SnapshotSchedule({ every: 500, growth: 1 }), 2_000_000, 1, 0.2, 10)
    expect(written.length).toBeGreaterThan(3)
    for (let i = 1; i < written.length; i++) {
      const last = written[i - 1]!
      expect(written[i]!.start - last.end).toBeGreaterThanOrEqual(4 * (last.end - last.start))
    }
    // Without the share rule (share 1): back to back.
    const unbounded = simulate(new SnapshotSchedule({ every: 500, growth: 1, share: 1 }), 2_000_000, 1, 0.2, 10)
    const gaps = unbounded.slice(1).map((w, i) => w.start - unbounded[i]!.end)
    expect(Math.max(...gaps.slice(2))).toBeLessThan(1)
  })

  it('refuses a growth below 1 or a share outside (0, 1]', () => {
    expect(() => new SnapshotSchedule({ every: 1, growth: 0.5 })).toThrow(RangeError)
    expect(() => new SnapshotSchedule({ every: 1, share: 0 })).toThrow(RangeError)
    expect(() => new SnapshotSchedule({ every: 1, share: 1.5 })).toThrow(RangeError)
  })
})
