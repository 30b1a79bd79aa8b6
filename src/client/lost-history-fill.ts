/**
 * When a device fills the history it will never read (lost-history.ts says what the fill is).
 *
 * Only a device without every key of the history fills (a 'from-join' member's, or its device
 * linked later; one removed and let back in 'from-join', which lacks the epochs it was out
 * for): it cannot open a snapshot (snapshot-seal.ts). And only once what its inner document
 * waits for can be nothing else: it has caught up, no row waits for predecessors, no snapshot
 * is awaited, and nothing held back could still open (only envelopes sealed under an epoch
 * before its first, or one it lacks below the current that no welcome of an admin is to bring:
 * `devicesToWelcome`). And only after a grace
 * period: the wait may be for a change the relay refused under an old key while a later one
 * of the same client went through; its author re-seals it within a round trip, and a fill
 * before it arrives would make this device drop it for good.
 */
import type * as Y from 'yjs'
import { readEnvelope } from '../shared/envelope.js'
import { historyKeys } from '../shared/snapshot-seal.js'
import { lowestEpoch } from './envelope-admission.js'
import { lostClocksFiller } from './lost-history.js'

/** How long what waits must have waited before it is filled. */
const GRACE_MS = 3_000

/** What the fill reads and asks of its conversation. */
export interface LostHistoryFillHost {
  readonly inner: Y.Doc
  readonly closed: boolean
  readonly epochKeys: ReadonlyMap<number, Uint8Array>
  /** The conversation's current key epoch. */
  readonly epoch: number
  /** Caught up, with no row waiting for its predecessors and no snapshot awaited. */
  readonly settled: boolean
  /** Envelopes held back (for a key, a sender's join record, a snapshot). */
  readonly held: ReadonlyArray<{ bytes: Uint8Array }>
  /** An admin is to give this device keys its invite could not carry (`devicesToWelcome`). */
  readonly awaitingWelcome: boolean
  /** Queue `job` on the receive chain; its failure is reported with `failure`. */
  afterIncoming(job: () => Promise<void>, failure: string): void
  /** A receive pass over what is held (it asks `fillers()` for what to fill). */
  receivePass(): Promise<void>
}

export class LostHistoryFill {
  /** Epochs of held envelopes, read once (a 'from-join' member may hold many it can never open). */
  private readonly epochs = new WeakMap<Uint8Array, number>()
  private timer: ReturnType<typeof setTimeout> | undefined
  /** Inside the receive pass this fill queued: the only pass that fills. */
  private filling = false

  /**
   * @example
   * ```ts
   * const fill = new LostHistoryFill(host)
   * if (doc.store.pendingStructs !== null) fill.soon()   // after each receive pass
   * const fillers = fill.fillers()                        // inside a pass: applied before what is held
   * ```
   */
  constructor(private readonly host: LostHistoryFillHost) {}

  /** Fill what still waits after the grace period, if it can only be history this device never reads. */
  soon(): void {
    const { host } = this
    if (this.timer !== undefined || host.closed || historyKeys(host.epochKeys, host.epoch)) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      if (host.closed || !this.due()) return
      host.afterIncoming(async () => {
        this.filling = true
        try {
          await host.receivePass()
        } finally {
          this.filling = false
        }
      }, 'could not apply held messages')
    }, GRACE_MS)
  }

  /** The fillers to apply in this pass: none but in the pass `soon` queued, and only if still due. */
  fillers(): Uint8Array[] {
    return this.filling && this.due() ? lostClocksFiller(this.host.inner) : []
  }

  /** Stop the timer (the conversation closes). */
  stop(): void {
    clearTimeout(this.timer)
  }

  /** Whether what the inner document waits for can only be history this device never reads. */
  private due(): boolean {
    const { host } = this
    if (host.inner.store.pendingStructs === null) return false
    const keys = host.epochKeys
    if (keys.size === 0 || historyKeys(keys, host.epoch)) return false
    if (!host.settled) return false
    const first = lowestEpoch(keys)
    let awaitingRead: boolean | undefined
    const awaitingNow = (): boolean => {
      awaitingRead ??= host.awaitingWelcome
      return awaitingRead
    }
    return host.held.every((d) => {
      let epoch = this.epochs.get(d.bytes)
      if (epoch === undefined) {
        try {
          epoch = readEnvelope(d.bytes).epoch
        } catch {
          epoch = -1
        }
        this.epochs.set(d.bytes, epoch)
      }
      // A lacked epoch below the current is filled only when no welcome is to bring its key: a
      // 'full' invite's joiner who lacks it now reads it once an admin is back, and a fill
      // before lost what it said for good (Yjs keeps what was filled as filled).
      return epoch < first || (epoch < host.epoch && !keys.has(epoch) && !awaitingNow())
    })
  }
}
