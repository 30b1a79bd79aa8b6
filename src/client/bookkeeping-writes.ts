/**
 * Bookkeeping writes of a conversation (outbox rows moved by acks, receipts, the positions of
 * records in relay order): those of one event-loop turn share one commit, queued on the
 * receive chain so they land after every row received before them, and may wait for company
 * (group commit). A device receiving a busy conversation made a transaction per ack before.
 *
 * The later write of a key wins. Record positions learnt from acknowledgements are encoded
 * when the write is issued, not when learnt: pages queued before it store the positions they
 * bring, and a copy taken earlier, written after theirs, put them out of the store (a restart
 * then held records it could not place, and never folded them).
 */
import type { Put } from './own-messages.js'

/** What the writes ask of their conversation. */
export interface BookkeepingHost {
  /** Queue `job` on the receive chain; its failure is reported with `failure`. */
  afterIncoming(job: () => unknown, failure: string): void
  /** Store `puts` in a commit that may wait for company; the chain does not wait for it. */
  storeBookkeeping(puts: Put[]): void
  /** The row of record positions, as it stands when written. */
  recordSeqsRow(): Put
}

/**
 * @example
 * ```ts
 * const writes = new BookkeepingWrites(host)
 * writes.add([[rowKey, row]])        // stored with the others of this turn
 * writes.recordSeqsMoved()           // the positions go with the next flush
 * writes.flush()                     // now (closing)
 * ```
 */
export class BookkeepingWrites {
  private pending = new Map<string, Uint8Array | null>()
  private scheduled = false
  /** Record positions learnt from acknowledgements, to store with the next flush. */
  private recordSeqsDirty = false

  constructor(private readonly host: BookkeepingHost) {}

  /** Store `puts` with the other writes of this event-loop turn. */
  add(puts: Put[]): void {
    const first = !this.scheduled
    for (const [k, v] of puts) this.pending.set(k, v)
    if (!first || (this.pending.size === 0 && !this.recordSeqsDirty)) return
    this.scheduled = true
    setTimeout(() => this.flush(), 0)
  }

  /** Record positions changed: stored with the next flush (as they stand then). */
  recordSeqsMoved(): void {
    this.recordSeqsDirty = true
  }

  /** Queue what is pending for commit now (after whatever is being stored already). */
  flush(): void {
    this.scheduled = false
    if (this.pending.size === 0 && !this.recordSeqsDirty) return
    const batch = [...this.pending]
    this.pending = new Map()
    this.host.afterIncoming(() => {
      if (this.recordSeqsDirty) batch.push(this.host.recordSeqsRow())
      this.recordSeqsDirty = false
      this.host.storeBookkeeping(batch)
    }, 'could not store acknowledgements')
  }
}
