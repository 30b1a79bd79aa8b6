/**
 * Messages that reached this device in a history snapshot. A snapshot is one member's copy of
 * everyone's messages, so each message in it is held back from the list until its author's
 * own signature verifies (message-signature.ts), and never shown if it fails: a member can
 * leave things out of a snapshot, but cannot put words in another's mouth.
 *
 * Checked newest first, a page at a time (a small first page, so the latest messages show
 * soon), each page after the received rows queued before it: a snapshot of 10,000 messages
 * does not hold back what arrives live. Which ids still wait and which failed is stored
 * (`verify:{id}`, conversation-record.ts) with received batches and at the end of a pass, so
 * a restart goes on where it stopped and never shows a message that failed.
 */
import type * as Y from 'yjs'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import type { MembershipState } from '../shared/membership.js'
import { decodeVerification, encodeVerification, keyOf } from './conversation-record.js'
import { INNER_MESSAGE_BATCHES, INNER_MESSAGES } from './inner-guard.js'
import { verifyMessages } from './message-signature.js'
import type { Put } from './own-messages.js'
import type { StoredMessage } from './shown-list.js'

/** Messages checked in the first page (the newest), then in each page after it. */
const FIRST_PAGE = 100
const PAGE = 1000

/** What the checks read and ask of their conversation. */
export interface SnapshotChecksHost {
  readonly id: string
  readonly closed: boolean
  readonly inner: Y.Doc
  readonly membership: MembershipState
  /** Settles once the received rows queued so far are applied: they go before each page. */
  readonly incomingTail: Promise<void>
  /** Store one row durably. */
  storeRow(put: Put): Promise<void>
  /** Messages may show (or stay hidden) now: the list changed. */
  changed(): void
  /** Tell the app (signatures that failed). */
  reportError(err: PetrelError): void
  /** Log an unexpected failure. */
  report(err: unknown, context: string): void
}

export class SnapshotChecks {
  private readonly unverified = new Set<string>()
  private readonly rejected = new Set<string>()
  /** Changed since last stored. */
  private dirty = false
  private running: Promise<void> | undefined

  /**
   * @example
   * ```ts
   * const checks = new SnapshotChecks(host)
   * checks.hold(id)                 // each message a snapshot added
   * checks.verifySoon()
   * checks.hidden(id)               // true until its signature verified; for good if it failed
   * ```
   */
  constructor(private readonly host: SnapshotChecksHost) {}

  /** Whether a message is kept from the list: not checked yet, or its signature failed. */
  hidden(id: string): boolean {
    return (this.unverified.size > 0 || this.rejected.size > 0) && (this.unverified.has(id) || this.rejected.has(id))
  }

  /** Whether messages still wait for their check. */
  get waiting(): boolean {
    return this.unverified.size > 0
  }

  /** Resume from the stored row. */
  load(bytes: Uint8Array): void {
    decodeVerification(bytes, this.unverified, this.rejected)
  }

  /** A message a snapshot added (or changed): hidden until checked. */
  hold(id: string): void {
    this.unverified.add(id)
    this.dirty = true
  }

  /** The row to store with a batch being committed, if anything changed since it was last stored. */
  takeRow(): Put | undefined {
    if (!this.dirty) return undefined
    this.dirty = false
    return this.row()
  }

  /**
   * Check what waits, unless a pass is running already (it takes what is added meanwhile).
   * Settles when the pass ends (failures are reported, never thrown).
   */
  verifySoon(): Promise<void> {
    const { host } = this
    this.running ??= (async () => {
      try {
        const messages = host.inner.getMap<StoredMessage>(INNER_MESSAGES)
        let size = FIRST_PAGE
        while (this.unverified.size > 0 && !host.closed) {
          // Received rows go first: they show the newest messages at once, while this works
          // through a snapshot's older ones (each page is ~70 ms of this thread's time).
          await host.incomingTail
          if (this.unverified.size === 0 || host.closed) break
          const page = [...this.unverified]
            .map((id) => ({ id, value: messages.get(id) }))
            .sort((a, b) => (b.value?.h ?? 0) - (a.value?.h ?? 0))
            .slice(0, size)
          size = PAGE
          const owner = (device: string) => host.membership.everDevices.get(device)
          const batches = host.inner.getMap(INNER_MESSAGE_BATCHES)
          const verdicts = await verifyMessages(host.id, page, owner, (key) => batches.get(key))
          let bad = 0
          page.forEach(({ id, value }, i) => {
            this.unverified.delete(id)
            if (value === undefined) return
            if (!verdicts[i]) {
              this.rejected.add(id)
              bad++
            }
          })
          if (bad > 0) {
            host.reportError(
              new PetrelError(ErrorCode.EnvelopeRejected, `${bad} message(s) in a history snapshot do not carry their author's signature: not shown`, { conversationId: host.id }),
            )
          }
          this.dirty = true
          host.changed()
        }
        // Stored once at the end (and with any received batch before it): rewriting every id
        // still unverified after each page was quadratic, and a restart merely checks again.
        if (this.dirty && !host.closed) {
          this.dirty = false
          await host.storeRow(this.row())
        }
      } catch (err) {
        host.report(err, 'could not verify snapshot messages')
        return
      } finally {
        this.running = undefined
      }
      // A snapshot applied while the last page's state was being stored added messages this
      // pass no longer looks at, and its verifySoon found this pass still running: without
      // another pass they stayed hidden until the next received batch (a fresh device that
      // applied a second snapshot at the end of its catch-up showed 600 of 6,600 for good).
      if (this.unverified.size > 0 && !host.closed) void this.verifySoon()
    })()
    return this.running
  }

  private row(): Put {
    return [keyOf.verification(this.host.id), encodeVerification(this.unverified, this.rejected)]
  }
}
