/**
 * Received envelopes this device cannot apply yet, kept (durably, `defer:{id}`) to try again:
 * from a sender whose join record has not come, under an epoch key not here yet or lost in a
 * race for its number (envelope-admission.ts), or updates held for a snapshot that fills the
 * history before them (missing-history.ts).
 *
 * They go again, all of them in relay order with the next received rows, after a membership
 * change (records came) or once asked to (`retrySoon`: a snapshot applied, holding stopped).
 * A snapshot covers no row from the first one held on (`coverableThrough`): its history would
 * lack what is held.
 */
import type * as Y from 'yjs'
import { decodeDeferred, encodeDeferred } from './conversation-record.js'
import type { IncomingEnvelope } from './envelope-admission.js'

/** Envelopes held for a sender's join record, an epoch key or a snapshot, at most. */
export const MAX_HELD = 50_000

/** Held for a snapshot, at most: beyond it updates are applied as they come (slower in Yjs, nothing lost). */
export const MAX_HELD_FOR_SNAPSHOT = MAX_HELD - 5_000

/**
 * @example
 * ```ts
 * const held = new HeldEnvelopes()
 * held.restore(storedRow, outerLog)              // as the conversation loads
 * held.add(envelope)                             // its sender is not a member yet
 * const again = held.take(recordsCame)           // at the start of each receive pass
 * batch.put.push([keyOf.deferred(id), held.encode()])
 * ```
 */
export class HeldEnvelopes {
  private list: IncomingEnvelope[] = []
  /** The keys of `list`: a device holding tens of thousands checked each new one against all (4 s to fill the bound). */
  private readonly keys = new Set<string>()
  private soon = false

  get size(): number {
    return this.list.length
  }

  /** The envelopes held, in the order they came. */
  get all(): readonly IncomingEnvelope[] {
    return this.list
  }

  /** Whether the next receive pass is to try them again (see `retrySoon`). */
  get due(): boolean {
    return this.soon
  }

  /** As the conversation loads: the stored list, each envelope read back from the outer log. */
  restore(stored: Uint8Array, log: Y.Map<Uint8Array>): void {
    for (const [key, seq, part] of decodeDeferred(stored)) {
      const bytes = log.get(key)
      if (bytes instanceof Uint8Array) this.push(part ? { key, seq, bytes, part } : { key, seq, bytes })
    }
  }

  /** Hold `envelope` until the records explain it; the oldest goes once `MAX_HELD` are held. Returns false if it was held already. */
  add(envelope: IncomingEnvelope): boolean {
    if (this.has(envelope.key)) return false
    if (this.list.length >= MAX_HELD) this.keys.delete(this.list.shift()!.key)
    this.push(envelope)
    return true
  }

  /** Hold an update for the snapshot it waits for (the caller checks `MAX_HELD_FOR_SNAPSHOT`). */
  addForSnapshot(envelope: IncomingEnvelope): void {
    if (!this.has(envelope.key)) this.push(envelope)
  }

  has(key: string): boolean {
    return this.keys.has(key)
  }

  /** The next receive pass tries them all again. */
  retrySoon(): void {
    this.soon = true
  }

  /**
   * At the start of a receive pass: every envelope held, to try again now (and no longer
   * held), if records came (`recordsCame`) or a retry was asked for; else none.
   */
  take(recordsCame: boolean): IncomingEnvelope[] {
    const again = (recordsCame || this.soon) && this.list.length > 0 ? this.list.splice(0) : []
    this.soon = false
    if (again.length > 0) this.keys.clear()
    return again
  }

  /** The highest row every row through which is applied (none held before it), given the cursor. */
  coverableThrough(cursor: number): number {
    return this.list.reduce((min, d) => Math.min(min, d.seq - 1), cursor)
  }

  private push(envelope: IncomingEnvelope): void {
    this.list.push(envelope)
    this.keys.add(envelope.key)
  }

  /** The stored form of the list (`defer:{id}`). */
  encode(): Uint8Array {
    return encodeDeferred(this.list.map((d) => [d.key, d.seq, d.part]))
  }
}
