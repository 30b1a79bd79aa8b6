/**
 * How far this device holds the relay's rows of a conversation: the cursor, the highest relay
 * row through which every row is applied here and its commit issued. It is what this device
 * tells the relay and the senders it holds (✓✓, receipts), what a snapshot may cover, and where
 * the next catch-up starts, so it never passes a row this device cannot show yet:
 *
 * - a row Yjs holds back until its predecessors come (rows can arrive out of order) stops it
 *   until the row integrates (`indexRows`);
 * - our own row, acknowledged by the relay (✓), moves it only when right after it: a ✓ can
 *   overtake rows the relay stored earlier (a relay node delivers other nodes' rows after
 *   reading them back), so one further ahead is remembered, up to a bound, and joins the
 *   cursor once everything below it is held.
 *
 * Storing it (`cursor:{id}`) is the conversation's; each move here returns the new value to store.
 */
import type { RowIndexEntry } from '../shared/room-messages.js'

/**
 * At most this many own rows acknowledged ahead of the cursor are remembered. Past that (rows
 * before them never arrive), further acks are dropped and rows received move the cursor.
 */
export const MAX_ACKED_AHEAD = 65_536

/**
 * @example
 * ```ts
 * const cursor = new RowCursor()
 * cursor.restore(storedSeq)
 * const { index, maxSeq } = cursor.indexRows(msg.index, (row) => integrated(row))
 * const moved = cursor.received(maxSeq)   // once the rows are applied
 * if (moved !== undefined) store(moved)
 * ```
 */
export class RowCursor {
  private seq = 0
  /** Rows received before their predecessors (Yjs holds them back until the gap fills). */
  private unresolved: RowIndexEntry[] = []
  /** Our own rows acknowledged above the cursor while rows before them were not held yet. */
  private readonly ackedAhead = new Set<number>()

  /** The highest row through which every row is held. */
  get through(): number {
    return this.seq
  }

  /** Rows received that still wait in Yjs for their predecessors. */
  get waiting(): number {
    return this.unresolved.length
  }

  /** As the conversation loads: the stored cursor. */
  restore(seq: number): void {
    this.seq = seq
  }

  /**
   * A `rows` message applied: its index with the rows still waiting from before, which of them
   * still wait (`integrated` says whether Yjs holds a row now), and the highest row the cursor
   * may reach through them — before the first that still waits.
   */
  indexRows(received: readonly RowIndexEntry[], integrated: (row: RowIndexEntry) => boolean): { index: RowIndexEntry[]; maxSeq: number } {
    const index = [...this.unresolved, ...received]
    const unresolved: RowIndexEntry[] = []
    // One pass: a lookup in the waiting list per row (and a spread of it into Math.min) was
    // quadratic, and threw past ~120,000 waiting rows.
    let maxSeq = 0
    let firstWaiting = Number.POSITIVE_INFINITY
    for (const row of index) {
      if (integrated(row)) maxSeq = Math.max(maxSeq, row.seq)
      else {
        unresolved.push(row)
        firstWaiting = Math.min(firstWaiting, row.seq)
      }
    }
    this.unresolved = unresolved
    if (unresolved.length > 0) maxSeq = Math.min(maxSeq, firstWaiting - 1)
    return { index, maxSeq }
  }

  /** Rows through `maxSeq` are applied: the new cursor, if it moved. */
  received(maxSeq: number): number | undefined {
    if (maxSeq <= this.seq) return undefined
    return this.moveTo(maxSeq)
  }

  /** Our own row `seq` was acknowledged: the new cursor if it moved (only from right below it). */
  ownRowAcked(seq: number): number | undefined {
    if (seq <= this.seq) return undefined
    if (seq !== this.seq + 1) {
      if (this.ackedAhead.size < MAX_ACKED_AHEAD) this.ackedAhead.add(seq)
      return undefined
    }
    return this.moveTo(seq)
  }

  /** The relay says this device holds every row through `seq` (its own record of it): the new cursor, if it moved. */
  relayHolds(seq: number): number | undefined {
    if (seq <= this.seq) return undefined
    return this.moveTo(seq)
  }

  /** Every row through `seq` is held: how far that reaches with our own rows acknowledged just above it, which it releases. */
  private moveTo(seq: number): number {
    let through = seq
    while (this.ackedAhead.delete(through + 1)) through++
    for (const s of this.ackedAhead) if (s <= through) this.ackedAhead.delete(s)
    this.seq = through
    return through
  }
}
