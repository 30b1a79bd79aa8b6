/**
 * What the relay acknowledging one of this device's rows means (PROTOCOL §5, `ack`): the row
 * is durably stored at relay position `seq` (✓).
 *
 * - Our **messages** still in the acknowledged envelopes take that position: they show ✓, and
 *   their outbox rows say so. One that left the envelope (sent again in another) is not stored
 *   by this ack, nor is one refused for good or as stale (an ack then is the relay
 *   acknowledging that range again after a resend, not the message).
 * - Our **records** take their position in relay order (membership is folded in that order):
 *   the records are folded again, and the positions stored with the next bookkeeping write.
 * - Once caught up, the row may move the cursor (row-cursor.ts says when).
 */
import type * as Y from 'yjs'
import { OUTER_RECORDS } from '../shared/outer-keys.js'
import type { MembershipBook } from './membership-book.js'
import type { OwnMessages, Put } from './own-messages.js'
import type { PositionIndex } from './position-index.js'
import { heldRangeKeys } from './range-keys.js'

/** An `ack` message: the relay position of the row, and the outer items (client, first clock, count) it held. */
export interface Ack {
  seq: number
  ranges: ReadonlyArray<{ client: number; clock: number; len: number }>
}

/** What an ack reads and changes of its conversation. */
export interface AcksHost {
  readonly outer: Y.Doc
  readonly book: MembershipBook
  readonly own: OwnMessages
  /** This user's messages by relay position (their ticks come from receipts by position). */
  readonly ownBySeq: PositionIndex
  /** Caught up with the relay (the provider synced). */
  readonly caughtUp: boolean
  /** How far this device holds the relay's rows. */
  readonly cursor: number
  /** Queue `job` on the receive chain; its failure is reported with `failure`. */
  afterIncoming(job: () => unknown, failure: string): void
  foldRecords(): Promise<void>
  /** Our own row `seq` is stored at the relay: the cursor may move (after what is queued). */
  ownRowStored(seq: number): void
  /** Record positions changed: stored with the next bookkeeping write. */
  recordSeqsMoved(): void
  /** Store `puts` with the other bookkeeping writes of this turn (bookkeeping-writes.ts). */
  storeSoon(puts: Put[]): void
  statusesChanged(ids: string[]): void
  /** The relay stored a row of ours: changes waiting for room may go (gap-fills.ts). */
  roomAgain(seq: number): void
}

/**
 * Act on one `ack` message.
 *
 * @example
 * ```ts
 * provider.messageHandlers[RoomMessage.Ack] = (r) => applyAck(host, readAck(r))
 * ```
 */
export function applyAck(host: AcksHost, msg: Ack): void {
  const rec = host.outer.getMap<Uint8Array>(OUTER_RECORDS)
  const keys = heldRangeKeys(host.outer, msg.ranges)
  let recordsMoved = false
  for (const key of keys) if (rec.has(key) && host.book.noteSeq(key, msg.seq)) recordsMoved = true
  if (recordsMoved) {
    // Encoded when the write is issued, not now (bookkeeping-writes.ts says why).
    host.recordSeqsMoved()
    host.afterIncoming(() => host.foldRecords(), 'could not fold records')
  }
  const puts: Put[] = []
  const acked: string[] = []
  const envelopes = new Set<string>()
  for (const key of keys) {
    // Only messages still in that envelope: one that left it (sent again in another) is not
    // stored by this one's ack (the relay acknowledges a resent refused range again).
    for (const [msgId, state] of host.own.inEnvelope(key)) {
      // Refused for good (its blank stands in the row): an ack now is the relay acknowledging
      // that row again after a resend, not the message. It stays failed. Refused as stale
      // and waiting to be sealed again: the same.
      if (state.seq !== 0 || state.refused || state.stale) continue
      state.seq = msg.seq
      // Stored by the relay: a failure without a refusal (a denial while not a member) is over.
      state.failure = ''
      envelopes.add(key)
      acked.push(msgId)
      host.ownBySeq.add(msg.seq, msgId)
    }
  }
  for (const key of envelopes) host.own.rowPuts(key, puts)
  if (host.caughtUp && msg.seq > host.cursor) host.ownRowStored(msg.seq)
  // Something of ours was stored just now (blanks are not in an ack's ranges).
  if (msg.ranges.length > 0) host.roomAgain(msg.seq)
  if (puts.length === 0) return
  host.statusesChanged(acked)
  host.storeSoon(puts)
}
