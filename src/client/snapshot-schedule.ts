/**
 * When a device writes the next history snapshot. A snapshot holds the whole conversation, so
 * each costs time in proportion to the history: encoding, sealing and signing it, the relay's
 * storing it, every member device's receiving it. Spaced a fixed number of messages apart
 * (the first rule below alone), a long busy conversation paid O(n²): at 10,000 messages a
 * second each snapshot took 1.4–2.1 s and the next began at once. Two more rules bound that:
 *
 * - **growth**: a snapshot covers at least `growth` × the relay rows the last one covered, so
 *   sizes grow geometrically and all of them together cost a constant multiple of the last;
 * - **share**: at most `share` of the wall clock goes to writing snapshots; after one whose
 *   work took d ms (from when it stopped waiting for incoming rows, its own pauses not
 *   counted), the next waits (1/share − 1) × d from its end. Within one, each step (sealing
 *   a part, writing one) is followed by a pause in the same proportion (`pause`): done in a
 *   burst, a snapshot of 5,000 messages held sends on a busy device for ~300 ms (p99 of a
 *   2,000/s run 176–277 ms; paced, 75–130 ms).
 *
 * Neither weakens a guarantee: snapshots only spare new devices the log and the relay its rows.
 * The cost is a longer tail: a new device downloads at most (growth − 1)/growth of the rows as
 * envelopes beside the snapshot, and the relay keeps them until the next one.
 */

/** The longest pause between two steps of a snapshot: a step that waited long in a queue is not all work. */
const MAX_PAUSE_MS = 50
/** The most one snapshot's work counts for (see `finished`). */
const MAX_WORK_MS = 60_000

export interface SnapshotScheduleOptions {
  /** Messages and other updates since the last snapshot before the next (0: never). */
  every: number
  /** Relay rows the next snapshot covers, at least, as a multiple of the last one's. Default 1.5. */
  growth?: number
  /** The most of the wall clock snapshots may take, between 0 and 1. Default 0.2. */
  share?: number
}

/**
 * One device's snapshot timing for one conversation (what it has seen since, and when its own
 * last snapshot finished); the conversation asks it on each of its sends.
 *
 * @example
 * ```ts
 * const schedule = new SnapshotSchedule({ every: 5000 })
 * if (schedule.due({ since: 5200, cursor: 9000, coveredSeq: 4000, now: performance.now() })) {
 *   schedule.started(performance.now())
 *   await incomingSettled()
 *   schedule.working(performance.now())
 *   for (const part of parts) { await schedule.pause(); await write(part) }
 *   schedule.finished(performance.now())
 * }
 * ```
 */
export class SnapshotSchedule {
  readonly every: number
  private readonly growth: number
  private readonly share: number
  private notBefore = 0
  private startedAt: number | undefined
  private workFrom: number | undefined
  private stepFrom: number | undefined
  /** Time spent in `pause` since the work began: the share counts only the rest. */
  private pausedMs = 0

  constructor(options: SnapshotScheduleOptions) {
    this.every = options.every
    this.growth = options.growth ?? 1.5
    this.share = options.share ?? 0.2
    if (!(this.growth >= 1) || !(this.share > 0 && this.share <= 1)) throw new RangeError('snapshot schedule: growth must be ≥ 1 and share in (0, 1]')
  }

  /**
   * Whether a snapshot is due now: `since` updates since the last snapshot (anyone's), this
   * device at relay row `cursor`, the last snapshot covering rows through `coveredSeq` (0: none).
   */
  due(at: { since: number; cursor: number; coveredSeq: number; now: number }): boolean {
    if (this.every <= 0 || this.startedAt !== undefined || at.since < this.every) return false
    if (at.cursor < at.coveredSeq * this.growth) return false
    return at.now >= this.notBefore
  }

  /** How long until a snapshot may start again (0: now), by the share of the time alone. */
  waitMs(now: number): number {
    return Math.max(0, this.notBefore - now)
  }

  /** A snapshot began (this device's): it may first wait for incoming rows to settle. */
  started(now: number): void {
    this.startedAt = now
    this.workFrom = undefined
  }

  /**
   * Its work begins (encoding, sealing, writing): the share counts from here, not from
   * `started`. Under steady traffic the wait for incoming rows to settle took 3 s of a 4-s
   * snapshot, and counted as work it held the next one back four times that long.
   */
  working(now: number): void {
    this.workFrom = now
    this.stepFrom = performance.now()
    this.pausedMs = 0
  }

  /**
   * Between two steps of writing a snapshot: waits (1/share − 1) × the time since the last
   * pause (at most `MAX_PAUSE_MS`), so the work keeps to its share while sends go on.
   */
  async pause(): Promise<void> {
    const now = performance.now()
    const took = now - (this.stepFrom ?? now)
    await new Promise((r) => setTimeout(r, Math.min(MAX_PAUSE_MS, took * (1 / this.share - 1))))
    this.stepFrom = performance.now()
    this.pausedMs += this.stepFrom - now
  }

  /** It ended, written or given up: the next waits so snapshots keep to their share of the time. */
  finished(now: number): void {
    // No work (it stopped before any, e.g. nothing to cover): nothing to make up for. A clock
    // that jumped, or a device asleep mid-snapshot, counts for a minute at most.
    const took = this.workFrom === undefined ? 0 : Math.min(MAX_WORK_MS, Math.max(0, now - this.workFrom - this.pausedMs))
    this.pausedMs = 0
    this.startedAt = undefined
    this.workFrom = undefined
    this.notBefore = now + took * (1 / this.share - 1)
  }
}
