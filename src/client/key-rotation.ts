/**
 * When this device starts a new key epoch for a conversation, and how (PROTOCOL §7.3).
 *
 * Scheduled: the device whose send crosses the threshold (`keyRotation.messages` updates under
 * one epoch, or `keyRotation.ms` since it began) rotates; receivers only count, so fewer devices
 * race. Not while this device writes a snapshot: sealed under the epoch it started with, the
 * snapshot would be refused behind the new epoch's record; the next send rotates. Any member
 * may rotate, and if two do at once the relay keeps the first and refuses the other.
 *
 * On demand: after someone left (their keys must not open what comes next), after an unlink,
 * or when the relay refused an epoch of ours that nobody else's took. One rotation at a time:
 * a second while the first runs would only race it.
 */
import type { MembershipState } from '../shared/membership.js'
import { RecordKind } from '../shared/records.js'
import type { ClientContext } from './client-context.js'
import type { MembershipBook } from './membership-book.js'
import type { Batch } from './storage/device-store.js'

/** What rotation reads and asks of its conversation. */
export interface KeyRotationHost {
  readonly ctx: ClientContext
  readonly book: MembershipBook
  /** The folded membership: its current epoch. */
  readonly membership: MembershipState
  /** Whether a snapshot is being sealed and written (the key must not change under it). */
  readonly snapshotBusy: boolean
  ready(): Promise<void>
  assertOpen(): void
  /** Take `key` as this device's key of `epoch`: the writes that store it (a key it replaces is kept as lost). */
  adoptEpochKey(epoch: number, key: Uint8Array): Array<[string, Uint8Array]>
  commit(batch: Batch): Promise<void>
  writeRecords(records: Uint8Array[]): Promise<void>
  report(err: unknown, context: string): void
}

/**
 * @example
 * ```ts
 * const rotation = new KeyRotation(host)
 * rotation.counted(epoch, messagesInBatch, true)   // after each batch sent (or received: false)
 * if (someoneLeft) await rotation.once()
 * ```
 */
export class KeyRotation {
  /** Updates seen under the current epoch, and when it started. */
  private use = { epoch: -1, updates: 0, since: Date.now() }
  private rotating = false

  constructor(private readonly host: KeyRotationHost) {}

  /** A rotation of this device is under way. */
  get busy(): boolean {
    return this.rotating
  }

  /** `n` updates went by under `epoch`, sent by this device or received: rotates once a threshold is crossed by a send. */
  counted(epoch: number, n: number, sending: boolean): void {
    const { host } = this
    if (epoch !== this.use.epoch) this.use = { epoch, updates: 0, since: Date.now() }
    this.use.updates += n
    const { messages, ms } = host.ctx.keyRotation
    if (!sending || this.rotating || host.snapshotBusy || epoch !== host.membership.epoch) return
    if (this.use.updates < messages && Date.now() - this.use.since < ms) return
    void this.once().catch((err) => host.report(err, 'could not rotate the key'))
  }

  /** Rotate, unless this device is rotating already. */
  async once(): Promise<void> {
    if (this.rotating) return
    this.rotating = true
    try {
      await this.rotate()
    } finally {
      this.rotating = false
    }
  }

  /** Start a new key epoch for the current members: its key stored here first, then its record written. */
  async rotate(): Promise<void> {
    const { host } = this
    await host.ready()
    host.assertOpen()
    const next = host.book.newEpoch()
    const record = await host.ctx.signRecord(RecordKind.Epoch, next.body)
    await host.commit({ put: host.adoptEpochKey(next.epoch, next.key) })
    await host.writeRecords([record])
  }
}
