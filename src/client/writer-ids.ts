/**
 * The Yjs client ids a conversation writes from, across sessions. Each load makes new
 * `Y.Doc`s, which draw fresh ids; until the twenty-seventh session every load that wrote added
 * one to both documents of every member and to the relay's index of the room, without bound,
 * and Yjs's transactions cost O(client ids in the document). A clean close now leaves its ids
 * and their states (`writer:{id}`, conversation-record.ts) and the next session writes on from
 * them when that is safe (PROTOCOL §6).
 *
 * Reusing an id is safe only if nothing was ever made from it past what this device holds: a
 * change made from the same (client, clock) twice would diverge the members' documents, and the
 * relay would take an outer row at a clock it already stores for a resend and drop it. Sends
 * leave the device before their commit lands, so only a clean close vouches for that, and only
 * for the storage as the close left it (a store restored from a backup, or used by a second
 * engine, may hold less than was sent). Hence: decided after the first sync's catch-up
 * (`resume`), the entry deleted, if still as read, before anything made from the ids leaves the
 * device (`taken`), and given up when our own changes come back from elsewhere (`abandon`).
 */
import * as Y from 'yjs'
import type { Awareness } from 'y-protocols/awareness'
import { randomClientId } from '../shared/client-id.js'
import { constantTimeEqual } from '../shared/crypto/index.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { decodeWriterIds, encodeWriterIds, keyOf, type WriterIds } from './conversation-record.js'
import type { DeviceStore } from './storage/device-store.js'

/** What the writer ids read and change of their conversation. */
export interface WriterIdsHost {
  readonly convId: string
  readonly store: DeviceStore
  readonly inner: Y.Doc
  readonly outer: Y.Doc
  /** The provider's awareness, once it is connected (it writes under the outer document's id). */
  readonly awareness: Awareness | undefined
  readonly membership: { epoch: number; devices: { size: number } }
  /** Inner client ids bound to other devices. */
  readonly bindings: ReadonlyMap<number, string>
  /** The epoch the inner id began writing in (foldRecords keeps it). */
  clientEpoch: number | undefined
  report(err: unknown, context: string): void
  reject(code: ErrorCode, message: string): void
  /** A write nobody waits for, whose failure is reported. */
  landing(commit: Promise<void>, failure: string): void
}

/** The stored writer ids are no longer the ones this session resumed (startTaking). */
class WriterIdsTaken extends Error {}

/**
 * One session's writer ids.
 *
 * @example
 * ```ts
 * const ids = new SessionWriterIds(host)
 * ids.read(storedEntry)                        // at load
 * ids.resume(16)                               // once the first catch-up is applied
 * if (ids.held) await ids.taken()              // before anything is handed to the relay
 * const entry = ids.entry(awareness, failed)   // at a clean close: store it
 * ```
 */
export class SessionWriterIds {
  /** The stored entry, read at load, until the first sync says whether to write on from it. */
  private last: { ids: WriterIds; bytes: Uint8Array } | undefined
  /** The stored entry of the ids this session resumed, as it was read. */
  private resumedEntry: Uint8Array | undefined
  /** The ids this session resumed, while it writes from them. */
  private resumed: { inner: number; outer: number } | undefined
  /** The outer id's awareness clock when this session took it up. */
  private awarenessClock = 0
  /**
   * The resumed ids are still stored as the last session left them: nothing was handed to the
   * relay from them yet. `taking`: their delete, under way.
   */
  private isHeld = false
  private taking: Promise<void> | undefined
  /** abandon() ran: this session's ids are not left to the next one either. */
  private usedElsewhere = false
  /** The relay refused an envelope of ours for its client id (another device's). */
  private idRefused = false

  constructor(private readonly host: WriterIdsHost) {}

  /** Whether a stored entry waits for the first sync (resume). */
  get waiting(): boolean {
    return this.last !== undefined
  }

  /** Resumed, and nothing sent from the ids yet: the next hand-off waits for `taken()`. */
  get held(): boolean {
    return this.isHeld
  }

  /** Whether this session writes from resumed ids. */
  get resuming(): boolean {
    return this.resumed !== undefined
  }

  /** The entry the last clean close left (`entry`), kept for `resume`. */
  read(bytes: Uint8Array): void {
    try {
      this.last = { ids: decodeWriterIds(bytes), bytes }
    } catch (err) {
      this.host.report(err, 'could not read the client ids the last session left')
    }
  }

  /**
   * Write on from the stored ids, rather than the fresh ones this load drew, once the first
   * sync's catch-up is applied: the relay has shown what it holds of them then. Only if their
   * states are still what the close saw, as is the membership (a device added, a 'from-join'
   * invite made, `maxEpochs` epochs passed meanwhile: fresh ids, as foldRecords would choose),
   * and nothing was written from this session's fresh ids yet. A session that writes before its
   * first sync (offline) keeps its fresh ids.
   */
  resume(maxEpochs: number): void {
    const last = this.last
    this.last = undefined
    if (!last) return
    const { ids } = last
    const { inner, outer, membership } = this.host
    const fits =
      // Nothing was written from this session's ids yet: they can still be swapped.
      Y.getState(inner.store, inner.clientID) === 0 &&
      Y.getState(outer.store, outer.clientID) === 0 &&
      Y.getState(inner.store, ids.innerClient) === ids.innerClock &&
      Y.getState(outer.store, ids.outerClient) === ids.outerClock &&
      !this.host.bindings.has(ids.innerClient) &&
      membership.epoch === ids.epoch &&
      membership.devices.size === ids.devices &&
      membership.epoch - ids.clientEpoch < maxEpochs
    if (!fits) return
    // The entry stays stored while nothing is sent from the ids (a session that only reads
    // leaves it exact): taken() deletes it before the first hand-off.
    this.isHeld = true
    this.resumedEntry = last.bytes
    this.resumed = { inner: ids.innerClient, outer: ids.outerClient }
    inner.clientID = ids.innerClient
    outer.clientID = ids.outerClient
    this.host.clientEpoch = ids.clientEpoch
    // The awareness clock goes on from the last session's: members still hold it, and would
    // ignore this session's typing until it passed it.
    this.moveAwareness(ids.outerClient, ids.awarenessClock)
    this.awarenessClock = ids.awarenessClock
  }

  /**
   * After received rows were applied to the outer document. One that moved our resumed outer
   * id on made Yjs draw another (a remote change at the id a document writes from): ours were
   * used elsewhere. Whatever the id now, the awareness follows it.
   */
  afterRows(): void {
    if (this.resumed && this.host.outer.clientID !== this.resumed.outer) this.abandon()
    else this.moveAwareness(this.host.outer.clientID)
  }

  /** The relay refused an envelope of ours because another device owns its client id. */
  refused(): void {
    this.idRefused = true
  }

  /**
   * The provider's awareness writes under the outer document's client id (y-websocket reads
   * `doc.clientID` for it): when that id changes, the awareness moves with it.
   */
  private moveAwareness(client: number, clock = 0): void {
    const awareness = this.host.awareness
    if (!awareness || awareness.clientID === client) return
    const state = awareness.getLocalState()
    // The old id leaves (members drop its typing flag); the state comes back under the new one.
    if (state !== null) awareness.setLocalState(null)
    awareness.clientID = client
    // An entry even with no state to move: the provider's disconnect encodes the id's clock, and
    // closing a client whose ids were abandoned threw (client-ids.test.ts, "gives the ids up").
    if (clock > 0 || !awareness.meta.has(client)) awareness.meta.set(client, { clock, lastUpdated: Date.now() })
    if (state !== null) awareness.setLocalState(state)
  }

  /**
   * Our resumed ids were written from elsewhere: a change signed by this device reached us at
   * our own inner id, or the outer id moved on under a received row. Another engine on this
   * storage, or a store restored behind what it sent: fresh ids from now on, and the stored
   * entry goes, so no later session takes them up either.
   */
  abandon(): void {
    const resumed = this.resumed
    if (!resumed) return
    this.resumed = undefined
    const { host } = this
    if (host.inner.clientID === resumed.inner) {
      host.inner.clientID = randomClientId()
      host.clientEpoch = host.membership.epoch
    }
    if (host.outer.clientID === resumed.outer) host.outer.clientID = randomClientId()
    this.moveAwareness(host.outer.clientID)
    this.usedElsewhere = true
    host.landing(host.store.commit({ put: [[keyOf.writerIds(host.convId), null]] }), 'could not forget client ids used elsewhere')
    this.isHeld = false
    host.reject(ErrorCode.AuthorshipViolation, 'this device’s client ids were written from elsewhere (a second engine on its storage, or storage restored from a backup): writing from fresh ones')
  }

  /** Start deleting the stored entry of the resumed ids, once (`taken` waits for it); nothing while none is held. */
  startTaking(): Promise<void> | undefined {
    if (!this.isHeld) return undefined
    if (!this.taking) {
      const { store, convId } = this.host
      const key = keyOf.writerIds(convId)
      const entry = this.resumedEntry
      const taking = (async () => {
        // Still the entry this session resumed: else another engine on this storage (no lock
        // between processes, or a storage object an app shares) took the ids meanwhile.
        const stored = await store.get(key)
        if (!stored || !entry || !constantTimeEqual(stored, entry)) throw new WriterIdsTaken()
        await store.commit({ put: [[key, null]] })
      })()
      // Its failure is reported by the write waiting for it (taken).
      taking.catch(() => undefined)
      this.taking = taking
    }
    return this.taking
  }

  /**
   * Resolves once the resumed ids' entry is deleted durably: until then nothing may be handed
   * to the relay, or a crash could leave a sent change behind an entry that offers its clocks
   * again. If the delete failed, it throws (the write waiting fails, as any write on a failing
   * disk: nothing of it left) and the next write tries the delete again.
   */
  async taken(): Promise<void> {
    const taking = this.startTaking()
    if (!taking) return
    try {
      await taking
      this.isHeld = false
    } catch (err) {
      if (err instanceof WriterIdsTaken) {
        // What waits was made from the ids: it fails, loudly, rather than go out at clocks the
        // other engine may have sent (the relay would drop it as a resend). Fresh ids from now.
        if (this.taking === taking) this.taking = undefined
        this.abandon()
        throw new PetrelError(ErrorCode.DeviceInUse, 'another engine on this device’s storage took the client ids this session resumed; sent again, the message goes from fresh ones', { conversationId: this.host.convId })
      }
      throw err instanceof PetrelError ? err : new PetrelError(ErrorCode.StorageFailed, `could not store that this session writes from the last one's client ids: ${(err as Error).message}`, { cause: err, conversationId: this.host.convId })
    } finally {
      if (this.taking === taking) this.taking = undefined
    }
  }

  /**
   * The entry that leaves this session's client ids to the next one, asked once every queue is
   * flushed and the provider is gone (nothing more made from them can leave the device); none
   * if a local write failed (`localWriteFailed`), the ids were used elsewhere or refused.
   */
  entry(awareness: Awareness, localWriteFailed: boolean): [string, Uint8Array] | undefined {
    // A commit still in flight (a record's: writeRecords does not hold `outgoing` for it) may
    // fail after this: the entry then names a state the disk never reaches (Yjs counts a
    // client's state to its first gap), and the next load does not take the ids up.
    if (localWriteFailed || this.usedElsewhere || this.idRefused) return undefined
    const { inner, outer, membership } = this.host
    const ids: WriterIds = {
      innerClient: inner.clientID,
      innerClock: Y.getState(inner.store, inner.clientID),
      outerClient: outer.clientID,
      outerClock: Y.getState(outer.store, outer.clientID),
      clientEpoch: this.host.clientEpoch ?? membership.epoch,
      epoch: membership.epoch,
      devices: membership.devices.size,
      awarenessClock: awareness.meta.get(outer.clientID)?.clock ?? 0,
    }
    // Ids that wrote nothing are no better than fresh ones.
    if (ids.innerClock === 0 && ids.outerClock === 0) return undefined
    // Resumed and never written from: the stored entry says just this (and typing did not move
    // the awareness clock).
    if (this.isHeld && !this.taking && ids.awarenessClock === this.awarenessClock) return undefined
    return [keyOf.writerIds(this.host.convId), encodeWriterIds(ids)]
  }
}
