/**
 * Where a history snapshot's state comes from: the conversation's copy on the replica thread
 * (history-replica.ts) where there is one, else the inner document itself.
 *
 * The copy is started once this device is likely to write a snapshot soon (the conversation
 * asks, half the way to one), fed every inner update the conversation stores, and seeded with
 * what was stored before it started. Its encoding is used only if its state vector covers the
 * document's as it stood when the snapshot was asked for; any failure (the thread stopped, an
 * update failed to apply) drops the copy for the rest of the session and the document is
 * encoded in place, as in a browser. Nothing is lost either way, and the app has nothing to act on.
 */
import * as Y from 'yjs'
import { canDeflate } from '../shared/snapshot-deflate.js'
import type { DeflatedState } from '../shared/snapshot-seal.js'
import { encodeState } from '../shared/state-encoder.js'
import { applyUpdate } from '../shared/update-reader.js'
import { type HistoryReplica, openHistoryReplica, seedReplica } from './history-replica.js'

export class SnapshotSource {
  private replica: { copy: HistoryReplica; seeded: Promise<void> } | 'off' | undefined
  /** Where the last state was encoded: on the replica thread, or here (tests read it). */
  encodedOn: 'thread' | 'here' | undefined

  /**
   * @param loadStored the conversation's stored inner updates, read once every write issued
   *   before the call has landed (the copy's seed).
   *
   * @example
   * ```ts
   * const source = new SnapshotSource(() => store.commit({}).then(() => store.loadLog(id, 'inner')).then((rows) => rows.map((r) => r.bytes)))
   * source.start()
   * source.take([update])                                // each inner update stored from now on
   * const state = await source.encode(doc, outgoing, () => [])
   * ```
   */
  constructor(private readonly loadStored: () => Promise<Uint8Array[]>) {}

  /** Whether a copy was started (or given up) in this session. */
  get started(): boolean {
    return this.replica !== undefined
  }

  /** Whether stored updates go to a copy: callers skip gathering them otherwise. */
  get feeding(): boolean {
    return typeof this.replica === 'object'
  }

  /**
   * Start the copy. What is stored meanwhile is held until the seed is in (seedReplica says
   * why). Where there is no replica thread, every snapshot is encoded here.
   */
  start(): void {
    if (this.replica !== undefined) return
    const copy = openHistoryReplica()
    if (!copy) {
      this.replica = 'off'
      return
    }
    this.replica = seedReplica(copy, this.loadStored)
    this.replica.seeded.catch(() => this.drop())
  }

  /** Inner updates just stored (or, for tombstones, sent to others only): the copy takes them. */
  take(updates: Uint8Array[]): void {
    if (typeof this.replica === 'object' && updates.length > 0) this.replica.copy.apply(updates)
  }

  /**
   * The inner document as one update (deflated where snapshots are compressed and the copy
   * does it), with `tombstones` applied: our refused messages, which are not history.
   * `stored` settles once the document's local changes so far are committed (commits feed
   * the copy), so the copy holds them.
   */
  async encode(doc: Y.Doc, stored: Promise<unknown>, tombstones: () => Uint8Array[]): Promise<Uint8Array | DeflatedState> {
    const replica = this.replica
    if (typeof replica === 'object') {
      const asked = Y.decodeStateVector(Y.encodeStateVector(doc))
      try {
        await replica.seeded
        await stored
        // Seeded from the local log, which keeps our refused messages: their tombstones again
        // (applying one twice changes nothing).
        const refused = tombstones()
        if (refused.length > 0) replica.copy.apply(refused)
        const encoded = canDeflate ? await replica.copy.encodeDeflated() : await replica.copy.encode()
        const held = Y.decodeStateVector(encoded.stateVector)
        let covers = true
        for (const [client, clock] of asked) if ((held.get(client) ?? 0) < clock) covers = false
        if (covers) {
          this.encodedOn = 'thread'
          return 'state' in encoded ? encoded.state : encoded
        }
      } catch {
        // The thread stopped or the copy failed to apply an update: encoded below instead.
      }
      this.drop()
    }
    this.encodedOn = 'here'
    const refused = tombstones()
    if (refused.length === 0) return encodeState(doc)
    // A copy with them applied: the document itself keeps showing them, failed.
    const copy = new Y.Doc({ gc: true })
    try {
      applyUpdate(copy, encodeState(doc))
      for (const t of refused) applyUpdate(copy, t)
      return encodeState(copy)
    } finally {
      copy.destroy()
    }
  }

  /** Stop the copy; snapshots of the rest of this session are encoded here, as in a browser. */
  drop(): void {
    if (typeof this.replica === 'object') this.replica.copy.close()
    this.replica = 'off'
  }
}
