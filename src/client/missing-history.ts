/**
 * History this device lacks because the relay compacted it before this device read it, and
 * which received snapshot fills it (PROTOCOL §11).
 *
 * A catch-up that meets a compacted row (a placeholder where envelopes were) needs a snapshot
 * covering it. Until one is applied, updates received after it are held (applied before it,
 * they would wait in Yjs, which re-merges what waits on every apply), and snapshot parts are
 * gathered. A device caught up without a usable snapshot stops holding, but remembers, across
 * restarts, that the history through that row is still missing: a snapshot arriving later
 * fills it. A device that lacks nothing it knows of asks the relay to spare it others'
 * snapshot parts (`want-parts`, PROTOCOL §4): it only needs their records.
 *
 * The conversation keeps the held envelopes and applies snapshots; this says when.
 */
import { WantParts, writeWantParts } from '../shared/room-messages.js'
import { RelayFeature } from '../shared/wire.js'
import type { ClientContext } from './client-context.js'

/** What this reads and asks of its conversation. */
export interface MissingHistoryHost {
  readonly id: string
  readonly ctx: ClientContext
  readonly closed: boolean
  /** The room's provider, once caught up: its socket (a reconnect makes a new one). */
  readonly caughtUpSocket: { readonly readyState: number; send(data: Uint8Array): void } | undefined
  /** Store the row through which history is still missing (0: none), kept across restarts. */
  storeStillMissing(through: number): void
}

/** What to do with a received update while history is missing (see `holdUpdate`). */
export type HoldVerdict = 'apply' | 'hold' | 'overflow'

export class MissingHistory {
  /**
   * Highest row that reached us compacted (its content replaced by a snapshot): a snapshot
   * covering it is needed, and updates after it are held for it while catching up.
   */
  private missedThrough = 0
  /**
   * This catch-up met a compacted row. Its seq understates the history it stands for: the relay
   * merges a compacted run into the run's smallest seq (PROTOCOL §11.5), so a GC row at seq 21
   * may stand for rows through 28 after a second compaction. A snapshot covering 22 then
   * cleared `missedThrough`, the next one's parts (covering 28) were ignored, and a fresh device
   * showed neither: 1,500–6,000 of 10,000 messages missing for good (history.test.ts, about one
   * run in 20 under load). Until the catch-up is applied, a later snapshot covering more than
   * the one applied is gathered too.
   */
  private compactedInCatchUp = false
  /** The most rows a snapshot this device applied covered. */
  private appliedCoversSeq = 0
  /**
   * The compacted history this device stopped holding for at the end of its catch-up, still
   * without a snapshot covering it: one that arrives later is taken all the same. A member
   * writes a snapshot in parts a paced step apart, the record with the last: a device whose
   * catch-up ends between two parts gets the rest live, after it stopped holding (and its
   * older snapshot, no longer the latest record's by then, is not used).
   */
  private stillMissingThrough = 0
  /** Too much was held: updates are applied as they come (slower in Yjs, nothing lost). */
  private overflowed = false
  /** The socket `declineParts` last spoke on. */
  private declinedOn: unknown

  /**
   * @example
   * ```ts
   * const missing = new MissingHistory(host)
   * missing.restore(storedStillMissing)   // as the conversation loads
   * missing.compactedRow(21)              // a placeholder in the catch-up
   * if (missing.wants(part.coversSeq)) assembly.add(part, …)
   * missing.snapshotApplied(28)
   * ```
   */
  constructor(private readonly host: MissingHistoryHost) {}

  /** As the conversation loads: the row `storeStillMissing` stored in an earlier session. */
  restore(stillMissingThrough: number): void {
    this.stillMissingThrough = stillMissingThrough
  }

  /** Updates wait for a snapshot covering a compacted row this catch-up met. */
  get holding(): boolean {
    return this.missedThrough > 0
  }

  /** This device lacks no history it knows of. */
  get whole(): boolean {
    return this.missedThrough === 0 && this.stillMissingThrough === 0
  }

  /**
   * A compacted row met while catching up (not a snapshot part the relay spared us). Stored at
   * once as still missing: a device closed before its catch-up ended (and so before
   * `stopHolding`) came back believing its history whole, asked to be spared snapshot parts,
   * and never showed the compacted history, nor what waited in Yjs for it.
   */
  compactedRow(seq: number): void {
    this.compactedInCatchUp = true
    if (seq > this.missedThrough) this.missedThrough = seq
    if (seq > this.stillMissingThrough) {
      this.stillMissingThrough = seq
      this.host.storeStillMissing(seq)
    }
  }

  /**
   * Whether a part of a snapshot covering rows through `coversSeq` is to be gathered. Any one
   * while history is missing, not only one covering the last placeholder seen: the relay also
   * blanks refused writes (a snapshot sealed under a stale key), and those blanks can lie past
   * the compacted part; which one applies is the latest record's. After the catch-up, only one
   * that covers what is still missing: a device whose history is whole takes no member's copy.
   */
  wants(coversSeq: number): boolean {
    const coversMore = this.compactedInCatchUp && coversSeq > this.appliedCoversSeq
    return this.missedThrough > 0 || (this.stillMissingThrough > 0 && coversSeq >= this.stillMissingThrough) || coversMore
  }

  /**
   * A received update, while `full` says whether the held envelopes reached their bound:
   * held for the snapshot, applied (nothing is missing, or holding overflowed), or applied
   * because holding just overflowed (what was held goes too).
   */
  holdUpdate(full: boolean): HoldVerdict {
    if (this.missedThrough === 0 || this.overflowed) return 'apply'
    if (full) {
      this.overflowed = true
      return 'overflow'
    }
    return 'hold'
  }

  /** A snapshot covering rows through `coversSeq` was applied. */
  snapshotApplied(coversSeq: number): void {
    this.appliedCoversSeq = Math.max(this.appliedCoversSeq, coversSeq)
    // Only history it covers: placeholders of a page received after this snapshot's (the relay
    // compacted again meanwhile) still want the newer snapshot, and updates still wait for it.
    if (coversSeq >= this.missedThrough) {
      this.missedThrough = 0
      this.overflowed = false
    }
    if (coversSeq >= this.stillMissingThrough && this.stillMissingThrough > 0) {
      this.stillMissingThrough = 0
      this.host.storeStillMissing(0)
      // The snapshot it waited for after its catch-up came live: the rest may be spared now.
      queueMicrotask(() => this.declineParts())
    }
  }

  /**
   * Caught up without a snapshot it could use (none written, or one it cannot read, as a
   * 'from-join' member): stop holding, and remember what is still missing. Returns whether it
   * stopped (what was held is then applied).
   */
  stopHolding(): boolean {
    if (this.missedThrough === 0) return false
    // Stored already as each compacted row came (compactedRow), unless a snapshot cleared it.
    if (this.missedThrough > this.stillMissingThrough) {
      this.stillMissingThrough = this.missedThrough
      this.host.storeStillMissing(this.stillMissingThrough)
    }
    this.missedThrough = 0
    this.overflowed = false
    return true
  }

  /** What the catch-up brought is applied (and any snapshot it waits for is known). */
  catchUpApplied(): void {
    this.compactedInCatchUp = false
    this.declineParts()
  }

  /**
   * Tell the relay, once per connection, that this device holds the history it has been sent:
   * others' snapshot parts may come to it live as placeholders (PROTOCOL §4, want-parts). Not
   * while it still waits for a snapshot (a catch-up that met compacted rows, or one that ended
   * between the parts of one): it gets them whole, as every connection does by default.
   */
  declineParts(): void {
    const { host } = this
    const ws = host.caughtUpSocket
    if (host.closed || !ws || !this.whole) return
    if (ws.readyState !== 1 || this.declinedOn === ws || !host.ctx.connection.hasRelayFeature(RelayFeature.SnapshotParts)) return
    this.declinedOn = ws
    ws.send(writeWantParts(false))
  }

  /**
   * As the room opens, before the catch-up: a device that lacks no history it knows of asks the
   * relay to spare it snapshot parts in the catch-up too (`want-parts 2`, PROTOCOL §4). The relay
   * stops sparing once it sends a compacted row (a snapshot's parts come after the rows it
   * covers), so a device that turns out to need the snapshot still gets its parts whole.
   */
  askToSpareParts(): void {
    const { host } = this
    if (host.closed || !this.whole || !host.ctx.connection.hasRelayFeature(RelayFeature.CatchUpParts)) return
    host.ctx.connection.sendRoom(host.id, writeWantParts(WantParts.SpareUnlessNeeded))
  }
}
