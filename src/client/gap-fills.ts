/**
 * Inner changes of ours the relay refused that hold no message: a tombstone, a profile or app
 * change. Each left a gap in its inner client at the other devices, and Yjs there holds back
 * every later change of that client until the gap is filled — the messages sent after it too.
 * Messages have their own path (a tombstone sent at once, relay-refusals.ts); these go again
 * here:
 *
 * - as they were when refused as stale (sealed then under the key this device holds), or for
 *   quota with a blank in their place: this device's document holds the change, so the others
 *   should too (a tombstone there deleted a title the others had from a later resend);
 * - as a tombstone (tombstone.ts) when refused for anything else (too large: it would never
 *   go), which fills the gap with the same items, deleted.
 *
 * A change refused for quota with nothing stored in its place is not here: the sync sends it
 * again by itself. (Taken as fills too, a conversation that stayed full sealed them all again
 * at each retry, and the unsent outer log grew.)
 *
 * A full conversation refuses them again, so they wait for a sign of room: the relay storing a
 * row of ours (its ack; or the refusal came with one), or else a timer from 30 s, doubled up to
 * five minutes (a stale change whose key came meanwhile). Until the thirty-sixth
 * session a tombstone refused this way was never sent again: after a key rotation in a full
 * conversation its blank stood in the log for good, and the author's later messages never
 * showed anywhere else. They are stored (`fills:{id}`), so a restart keeps them.
 */
import { toBase64Url } from '../shared/crypto/index.js'
import { tombstoneUpdate } from './tombstone.js'

/** Without a sign of room, what waits goes again after this long, doubled each time up to the max. */
const FIRST_RETRY_MS = 30_000
const MAX_RETRY_MS = 5 * 60_000


/** What the fills read and ask of their conversation. */
export interface GapFillsHost {
  readonly closed: boolean
  /** Seal `update` (already in our document) for the other devices. */
  sealForOthers(update: Uint8Array): Promise<void>
  /** Store the waiting fills (not waited for). */
  saveFills(bytes: Uint8Array[]): void
  report(err: unknown, context: string): void
}

export class GapFills {
  /** Waiting updates, by their bytes (a second refusal of the same change adds nothing). */
  private readonly waiting = new Map<string, Uint8Array>()
  private timer: ReturnType<typeof setTimeout> | undefined
  private retryMs = FIRST_RETRY_MS
  private lastRoomSeq = 0
  /**
   * An ack came and no refusal since: the relay sends a commit's acks, then what it refused in
   * it, so a refusal now came with rows of ours stored in the same commit.
   */
  private roomSinceRefusal = false

  /**
   * @example
   * ```ts
   * const fills = new GapFills(host)
   * fills.load(storedUpdates)                  // at load
   * fills.refused(update, false)               // a refused change of ours that holds no message: as a tombstone
   * fills.roomAgain(ack.seq)                  // on each ack of ours
   * ```
   */
  constructor(private readonly host: GapFillsHost) {}

  /** How many wait. */
  get size(): number {
    return this.waiting.size
  }

  /** Fills a previous session stored. */
  load(updates: Uint8Array[]): void {
    for (const u of updates) this.waiting.set(toBase64Url(u), u)
    if (this.waiting.size > 0) this.schedule()
  }

  /** Our change `update` was refused: it goes again as it is (`asIs`), or as its tombstone. */
  refused(update: Uint8Array, asIs: boolean): void {
    const fill = asIs ? update : tombstoneUpdate(update)
    const id = toBase64Url(fill)
    if (this.waiting.has(id)) return
    this.waiting.set(id, fill)
    this.host.saveFills([...this.waiting.values()])
    // Refused in a commit that stored a row of ours: a change of ours stored after the gap shows
    // nowhere else until the fill lands, so it goes now.
    if (this.roomSinceRefusal) queueMicrotask(() => this.flush())
    else this.schedule()
  }

  /** A `refused` message was handled (fills added or not): the next one needs a new ack to send at once. */
  refusalHandled(): void {
    this.roomSinceRefusal = false
  }

  /**
   * The relay stored a row of ours at `seq`: there is room, send what waits now. An ack of a row
   * acknowledged before (the relay answering a resend) is no sign of room: it is ignored.
   */
  roomAgain(seq: number): void {
    if (seq <= this.lastRoomSeq) return
    this.lastRoomSeq = seq
    this.roomSinceRefusal = true
    if (this.waiting.size === 0) return
    this.retryMs = FIRST_RETRY_MS
    this.flush()
  }

  close(): void {
    clearTimeout(this.timer)
    this.timer = undefined
  }

  private schedule(): void {
    if (this.timer !== undefined || this.host.closed) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.retryMs = Math.min(MAX_RETRY_MS, this.retryMs * 2)
      this.flush()
    }, this.retryMs)
  }

  private flush(): void {
    if (this.host.closed || this.waiting.size === 0) return
    const fills = [...this.waiting.values()]
    this.waiting.clear()
    // The stored list shrinks once they are sealed and stored as our envelopes: a crash
    // between the two sends them twice, which changes nothing at the other devices.
    void Promise.all(fills.map((fill) => this.host.sealForOthers(fill))).then(
      () => this.host.saveFills([...this.waiting.values()]),
      (err) => {
        for (const fill of fills) this.waiting.set(toBase64Url(fill), fill)
        this.host.report(err, 'could not send a gap fill')
        this.schedule()
      },
    )
  }
}
