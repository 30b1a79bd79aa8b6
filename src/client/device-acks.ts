/**
 * What this device tells the relay it holds and has read in one conversation: the device ack
 * (PROTOCOL §4, `device-ack`), from which the senders' ✓✓ and blue ✓✓ are derived.
 *
 * Two positions, both relay row sequence numbers: `stored`, the highest row through which every
 * row is in a committed transaction here, and `read`, how far the user has read. An ack never
 * claims more than is stored (blue ✓✓ never runs ahead of ✓✓), and once a commit of received
 * rows failed (a full disk) this session claims nothing more as stored: a later write that fits
 * would otherwise tell senders ✓✓ for messages this device does not hold. The next session
 * fetches what is missing (its state vector says so) and goes on.
 *
 * Acks go at most every ACK_EVERY_MS (a burst of rows needs one, not one per row), at once when
 * the page is hidden (a background tab's timers fire about once a second: page-visibility.ts),
 * and once more when the conversation closes.
 */
import { writeDeviceAck } from '../shared/room-messages.js'
import { afterUnlessHidden, whenPageHides } from './page-visibility.js'

/** A device acknowledges (✓✓, blue ✓✓) at most this often. */
const ACK_EVERY_MS = 50

/** Where acks go, and what they say of this device. */
export interface AckTarget {
  readonly deviceId: string
  /** false: this device sends no read positions (WhatsApp's privacy setting). */
  readonly readReceipts: boolean
  /** The conversation's socket, if it is open and synced; acks are dropped otherwise (the next one says it all). */
  socket(): { send(data: Uint8Array): void } | undefined
  readonly closed: boolean
}

export class DeviceAcks {
  private storedThrough = 0
  private readThrough = 0
  private storeFailed = false
  private scheduled = false
  private cancelTimer: (() => void) | undefined
  /** Listening for the tab being hidden (from the first ack on): one already waiting on a timer goes then. */
  private stopOnHide: (() => void) | undefined

  /**
   * @example
   * ```ts
   * const acks = new DeviceAcks({ deviceId, readReceipts: true, socket: () => ws, closed: false })
   * acks.stored(cursor)   // after the commit that holds rows through `cursor` landed
   * acks.schedule()       // goes within 50 ms
   * ```
   */
  constructor(private readonly target: AckTarget) {}

  /** The highest row this device durably holds, every row before it too. */
  get storedSeq(): number {
    return this.storedThrough
  }

  /** How far the user has read (stored in the device's store by the caller). */
  get readSeq(): number {
    return this.readThrough
  }

  /** Positions as stored by the last session. */
  resume(stored: number, read: number): void {
    this.storedThrough = stored
    this.readThrough = read
  }

  /** Rows up to `seq` are in a committed transaction: they may be acknowledged (✓✓). */
  stored(seq: number): void {
    if (this.storeFailed) return
    if (seq > this.storedThrough) this.storedThrough = seq
  }

  /** A commit of received rows failed: this session claims nothing more as stored. */
  storeFailedOnce(): void {
    this.storeFailed = true
  }

  /** The user read everything through `seq`. Returns whether that is further than before. */
  read(seq: number): boolean {
    if (seq <= this.readThrough) return false
    this.readThrough = seq
    return true
  }

  /** Send an ack soon (at most every ACK_EVERY_MS; at once when the page is hidden). */
  schedule(): void {
    if (this.scheduled) return
    this.scheduled = true
    this.cancelTimer = afterUnlessHidden(ACK_EVERY_MS, () => this.sendNow())
    if (!this.target.closed)
      this.stopOnHide ??= whenPageHides(() => {
        if (this.scheduled) this.sendNow()
      })
  }

  /** Send the ack that is scheduled, if one is, now. */
  sendNow(): void {
    this.cancelTimer?.()
    if (!this.scheduled) return
    this.scheduled = false
    const ws = this.target.socket()
    if (!ws) return
    ws.send(writeDeviceAck(this.target.deviceId, this.storedThrough, this.target.readReceipts ? Math.min(this.readThrough, this.storedThrough) : 0))
  }

  /** Stop listening for the page being hidden (the conversation closes). */
  stop(): void {
    this.stopOnHide?.()
  }
}
