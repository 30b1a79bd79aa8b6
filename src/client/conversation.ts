/**
 * One conversation on this device: the inner document (plaintext, local only), the outer log
 * (sealed envelopes and signed records, synced through the relay by y-websocket's provider
 * over a virtual socket), and the bridge between them.
 *
 * Outgoing: an inner change is sealed into an envelope and written to the outer log; both
 * updates are committed to local storage in one atomic batch before `send()` resolves, so a
 * send survives a reload or crash, and the provider uploads it when a connection exists.
 * Incoming: rows from the relay arrive with their sequence numbers; envelopes are verified,
 * decrypted, checked for authorship and applied in relay order, and the outer and inner
 * changes are committed together, so a crash never leaves one without the other.
 *
 * Its parts live in files of their own, each reaching this class through a host interface
 * declared beside it.
 * - Sending: sends in batches (send-batches.ts), sealed and stored (seal-queue.ts); this
 *   device's messages and outbox rows (own-messages.ts); the relay's acks (relay-acks.ts) and
 *   refusals (relay-refusals.ts) of our writes, and re-seals after stale ones
 *   (stale-reseal.ts); this device's own acknowledgements (device-acks.ts) and the writes
 *   they make (bookkeeping-writes.ts); membership changes (member-actions.ts) and key
 *   rotations (key-rotation.ts).
 * - Receiving: the receive chain, which takes the relay's rows in passes, in relay order, and
 *   stores what each pass applied (received-rows.ts); the checks each envelope passes before
 *   it is opened, in order (envelope-admission.ts); what it may not open yet (held-envelopes.ts); how far the relay's
 *   rows are held, for ✓✓ and the next catch-up (row-cursor.ts); what an update may change is
 *   inner-guard.ts's to say.
 * - Showing: the shown list (shown-list.ts).
 * - History: filling what a late joiner never reads (lost-history-fill.ts); snapshots written
 *   (snapshot-writer.ts, snapshot-source.ts) and taken in (missing-history.ts says when;
 *   snapshot-assembly.ts, snapshot-checks.ts; applied by a receive pass, received-rows.ts).
 * - What remains here: loading and connecting, membership folds and what they start (key
 *   changes, welcomes, names said again), the public API, and closing.
 *
 * Work queued behind received rows goes through `afterIncoming` (the receive chain), sealing
 * through `afterOutgoing`.
 */
import type { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'
import { constantTimeEqual, fromBase64Url, toBase64Url } from '../shared/crypto/index.js'
import { decryptEnvelope, keyCheckOf, readEnvelope } from '../shared/envelope.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { devicesToWelcome, type MembershipState } from '../shared/membership.js'
import { envelopeKey, OUTER_LOG, OUTER_RECORDS } from '../shared/outer-keys.js'
import { encodeState } from '../shared/state-encoder.js'
import { applyUpdate } from '../shared/update-reader.js'
import {
  type DeviceCertificate,
  encodeUnlinkBody,
  RecordKind,
} from '../shared/records.js'
import {
  type ReceiptEntry,
  readAck,
  readCursor,
  readReceipts,
  readRefused,
  readRows,
  RoomMessage,
} from '../shared/room-messages.js'
import { Reason, reasonName, StrictReader } from '../shared/wire.js'
import {
  type ConversationRecord,
  decodeBindings,
  decodeCursor,
  decodeMessageSeqs,
  encodeMessageSeqs,
  decodeReceipts,
  decodeGapFills,
  decodeLostKeys,
  encodeGapFills,
  encodeConversationRecord,
  encodeCursor,
  encodeReceipts,
  encodeLostKeys,
  keyOf,
} from './conversation-record.js'
import type { ClientContext } from './client-context.js'
import { assertName, assertTitle, type Profile, RestatedContext } from './restated-context.js'
import { INNER_MESSAGE_BATCHES, INNER_MESSAGES, INNER_META, INNER_PROFILES } from './inner-guard.js'
import { type Batch, COMMIT_SOON, type CommitOptions } from './storage/device-store.js'
import { randomClientId } from '../shared/client-id.js'
import { Presence } from './presence.js'
import { type MemberReceipt, ReceiptBook } from './receipts.js'
import { MembershipBook, safetyNumber } from './membership-book.js'
import { tombstoneUpdate } from './tombstone.js'
import { SessionWriterIds, type WriterIdsHost } from './writer-ids.js'
import { LostHistoryFill, type LostHistoryFillHost } from './lost-history-fill.js'
import { HeldEnvelopes } from './held-envelopes.js'
import { createRoomProvider } from './room-provider.js'
import { GapFills, type GapFillsHost } from './gap-fills.js'
import { RowCursor } from './row-cursor.js'
import { KeyRotation, type KeyRotationHost } from './key-rotation.js'
import { BookkeepingWrites, type BookkeepingHost } from './bookkeeping-writes.js'
import { type AcksHost, applyAck } from './relay-acks.js'
import { SealQueue, type SealQueueHost } from './seal-queue.js'
import { MissingHistory, type MissingHistoryHost } from './missing-history.js'
import { applyRefusal, type RefusalsHost } from './relay-refusals.js'
import { PositionIndex } from './position-index.js'
import { type Message, ShownList, type StoredMessage } from './shown-list.js'
import { OwnMessages, type Put } from './own-messages.js'
import { type AckTarget, DeviceAcks } from './device-acks.js'
import { type InviteOptions, MemberActions, type MemberActionsHost, type MemberInfo } from './member-actions.js'
import { isClock, messageIdFor } from './message-id.js'
import { SendBatches, type SendBatchesHost } from './send-batches.js'
import { SnapshotAssembly } from './snapshot-assembly.js'
import { StaleReseal, type StaleResealHost } from './stale-reseal.js'
import { SnapshotChecks, type SnapshotChecksHost } from './snapshot-checks.js'
import { ORIGIN_LOAD, ORIGIN_LOCAL_OUTER, ORIGIN_REMOTE } from './origins.js'
import { batchTag, ReceivedRows, type ReceivedRowsHost } from './received-rows.js'
import { SnapshotSource } from './snapshot-source.js'
import { type SnapshotHost, SnapshotWriter } from './snapshot-writer.js'
import { utf8Length } from '../shared/utf8-length.js'
import { encodeSummary, STALE, staleSummaryKey, type Summary, SUMMARY_MESSAGES, summaryKey } from './summary.js'

export type { Message } from './shown-list.js'

/** Every part's host interface at once (Conversation.partsHost). */
type PartsHost = SendBatchesHost &
  StaleResealHost &
  GapFillsHost &
  MemberActionsHost &
  AckTarget &
  SnapshotChecksHost &
  SnapshotHost &
  WriterIdsHost &
  LostHistoryFillHost &
  MissingHistoryHost &
  RefusalsHost &
  SealQueueHost &
  KeyRotationHost &
  BookkeepingHost &
  AcksHost &
  ReceivedRowsHost

/** Text limit, besides the relay's envelope limit. */
const MAX_TEXT_BYTES = 64 * 1024
/** Ticks without an error, one object each: the list asks for them per message on every ack and receipt. */
const TICKS: Readonly<Record<'pending' | 'sent' | 'delivered' | 'read', { readonly status: Message['status'] }>> = {
  pending: { status: 'pending' },
  sent: { status: 'sent' },
  delivered: { status: 'delivered' },
  read: { status: 'read' },
}

/** Merge a document's stored updates into one row when it has more than this many. */
const COMPACT_AFTER_ROWS = 500
/**
 * Denials of a conversation that pass (wire.ts `Reason`): too many open on one connection, the
 * relay's own trouble, a conversation full for now. The device asks again, backing off, and
 * what is pending stays pending; any other denial is final.
 */
const TRANSIENT_DENIALS: ReadonlySet<number> = new Set([Reason.TooManyRooms, Reason.Internal, Reason.QuotaExceeded])

/**
 * Epochs one inner client id writes through at most (besides a fresh one whenever a device
 * joins or a 'from-join' invite is made, foldRecords). A device that can never open one epoch
 * (a member wrapped it a bad key) holds back each writer's later changes until that writer's
 * next client id: this bounds how long. Fewer ids, cheaper transactions: Yjs's cost a
 * transaction grows with the client ids a document holds (75 µs at 1,000, 2.4 ms at 10,000,
 * against 16 µs; BENCHMARKS.md, twenty-fifth session).
 */
const CLIENT_ID_EPOCHS = 16

export class Conversation {
  // Both documents are made on first use. A conversation opened from its summary (`open:
  // 'lazy'`) needs neither until it loads, and each Y.Doc draws its client id from
  // `crypto.getRandomValues`: 2,000 of them were 36 ms of a 170-ms start with 1,000
  // conversations (benchmark 6).
  private innerDoc: Y.Doc | undefined
  private outerDoc: Y.Doc | undefined

  /**
   * The conversation's inner document (plaintext, on this device only): messages, profiles,
   * and whatever an app writes to it, which is sealed and synced like messages.
   *
   * @example
   * ```ts
   * conv.doc.getMap('drafts').set('me', 'half a thought')
   * ```
   */
  get doc(): Y.Doc {
    this.innerDoc ??= new Y.Doc({ guid: localGuid() })
    return this.innerDoc
  }

  /** The outer document: the relay's log of sealed envelopes and signed records, ciphertext only. */
  private get outer(): Y.Doc {
    this.outerDoc ??= new Y.Doc({ gc: false, guid: localGuid() })
    return this.outerDoc
  }
  private provider: WebsocketProvider | undefined
  private readonly book: MembershipBook
  /** Own messages refused as sealed under an old epoch, waiting for the new key (stale-reseal.ts). */
  private readonly reseal: StaleReseal
  private readonly fills: GapFills
  /** The epoch in which the inner document's current client id began writing (foldRecords). */
  private clientEpoch: number | undefined
  /** Someone came who may not read what was said before; our name and the title are to be said again (restated-context.ts). */
  private restateDue = false
  /** The title and names, read with what was said again for newcomers. */
  private readonly restated = new RestatedContext(
    () => this.doc.getMap<Profile>(INNER_PROFILES),
    () => this.doc.getMap(INNER_META),
    () => this.membership.epoch,
  )
  /** The client ids this session writes from, across sessions (writer-ids.ts). */
  private readonly writerIds: SessionWriterIds
  /**
   * The stored writer ids as the client read them for every conversation at its start (null:
   * none), in one range read rather than a point read a load (client.ts says what those cost).
   */
  private writerIdsRead: Uint8Array | null | undefined
  /** Envelopes waiting for their sender's join record, their epoch key or a snapshot (held-envelopes.ts). */
  private readonly held = new HeldEnvelopes()
  /** Log rows appended since load, and whether a local write failed: see compactOnClose. */
  private appendedRows = 0
  private localWriteFailed = false
  /** Our keys that lost a race for their epoch number: only to re-seal what we sealed with them. */
  private readonly lostKeys = new Map<string, Uint8Array>()
  private bindings = new Map<number, string>()
  /** When this device fills history it will never read (lost-history-fill.ts). */
  private readonly lostFill: LostHistoryFill
  /** Sends being signed and written into the document, in batches (send-batches.ts). */
  private readonly sends: SendBatches
  /** Invites, adding and removing members, leaving (member-actions.ts). */
  private readonly memberActions: MemberActions
  /** Devices whose refused add was done again this session (relay-refusals.ts): once each. */
  private readonly readded = new Set<string>()
  /** This device's messages here: their envelopes, ticks from the relay, and outbox rows (own-messages.ts). */
  private readonly own: OwnMessages
  /** How far this device holds the relay's rows (row-cursor.ts). */
  private readonly cursor = new RowCursor()
  /** How far this device tells the relay it holds and has read (device-acks.ts): the senders' ✓✓. */
  private readonly acks: DeviceAcks
  /** seq of the envelope that brought each received message (for unread counts). */
  private readonly messageSeq = new Map<string, number>()
  private readonly receiptBook = new ReceiptBook()
  private presence: Presence | undefined
  private hlc = 0
  private counter = 0
  private outgoing: Promise<void> = Promise.resolve()
  /** Local inner updates sealed, written to the outer log and stored, in batches (seal-queue.ts). */
  private readonly seals: SealQueue
  /** When this device starts a new key epoch (key-rotation.ts). */
  private readonly rotation: KeyRotation
  /** Acks', receipts' and record positions' writes of one turn, in one commit (bookkeeping-writes.ts). */
  private readonly bookkeeping: BookkeepingWrites
  private tagging: string[] | undefined
  private capturedOuter: Uint8Array[] = []
  private readonly listeners = new Set<() => void>()
  private notifyScheduled = false
  private denied: PetrelError | undefined
  private refusedByRelay = false
  /** `client.join` waits for the relay's answer: a refusal is its rejection, not an `error` event too. */
  private joinPending = false
  /** The refusal is this person's own leave (see foldRecords: a join after it ends it). */
  private deniedAsLeft = false
  private reopenRetries = 0
  private reopenTimer: ReturnType<typeof setTimeout> | undefined
  private closed = false
  /** Until the documents are loaded: what was shown last time (see summary.ts). */
  private summary: Summary | undefined
  private loading: Promise<void> | undefined
  /** The stored summary may not match the documents (see commit). Unknown at first: assume so. */
  private summaryStale = true
  private readonly syncWaiters = new Set<(err?: PetrelError) => void>()
  /** Sends waiting for this device's first key (a conversation it was added to). */
  private keyWaiters: Array<() => void> = []
  /** Sealing that waits for the key to change after a removal (seal-queue.ts), woken by the fold that changes it. */
  private rotationWaiters: Array<() => void> = []
  /** A member device's turn to carry out a due rotation, should no admin device do it first. */
  private dueRotationTimer: ReturnType<typeof setTimeout> | undefined
  /** Received snapshots, from their parts to the state to apply (snapshot-assembly.ts). */
  private readonly assembly: SnapshotAssembly
  /** History the relay compacted before this device read it, and the snapshot that fills it (missing-history.ts). */
  private readonly missing: MissingHistory
  /** Messages that came from a snapshot: shown once their author's signature verifies, never if it fails (snapshot-checks.ts). */
  private readonly checks: SnapshotChecks
  /** This device unlinked someone and the key has not changed since: it rotates, admin or not. */
  private unlinkedHere = false
  /** When and how this device writes history snapshots (snapshot-writer.ts). */
  private readonly snapshots: SnapshotWriter
  /**
   * What snapshots are encoded from (snapshot-source.ts): the inner document's copy on the
   * replica thread, started once this device sends here and half the way to a snapshot.
   */
  private readonly source: SnapshotSource
  /** The rows the relay sends, taken in by passes in relay order (received-rows.ts). */
  private readonly received: ReceivedRows
  /** The host object every part reaches this conversation through (see partsHost). */
  private readonly parts: PartsHost

  private constructor(
    readonly id: string,
    private readonly record: ConversationRecord,
    private readonly ctx: ClientContext,
  ) {
    this.book = new MembershipBook(id, ctx.identity)
    this.own = new OwnMessages(id)
    // One object for every part's host interface: each part sees only its own interface of it.
    const host = this.partsHost()
    this.parts = host
    this.sends = new SendBatches(host)
    this.reseal = new StaleReseal(host)
    this.fills = new GapFills(host)
    this.memberActions = new MemberActions(host)
    this.acks = new DeviceAcks(host)
    this.checks = new SnapshotChecks(host)
    this.lostFill = new LostHistoryFill(host)
    this.missing = new MissingHistory(host)
    this.seals = new SealQueue(host)
    this.rotation = new KeyRotation(host)
    this.bookkeeping = new BookkeepingWrites(host)
    this.writerIds = new SessionWriterIds(host)
    this.received = new ReceivedRows(host)
    this.source = new SnapshotSource(async () => {
      await ctx.store.commit({})
      const rows = await ctx.store.loadLog(id, 'inner')
      return rows.map((r) => r.bytes)
    })
    this.snapshots = new SnapshotWriter(host, this.source)
    this.assembly = new SnapshotAssembly(
      id,
      (code, message) => this.reject(code, message),
      () => {
        if (!this.closed) this.retryDeferred()
      },
    )
    this.shown = new ShownList({
      conversationId: id,
      userId: ctx.identity.userId,
      // Read when the list is first built (after the documents load), not here.
      messages: () => this.doc.getMap<StoredMessage>(INNER_MESSAGES),
      name: (userId) => this.restated.name(userId),
      hidden: (msgId) => this.checks.hidden(msgId),
      statusOf: (msgId, author, v) => this.statusOf(msgId, author, v),
    })
  }

  /**
   * Open a conversation from local storage (it may be brand new and empty). `writerIds`: its
   * stored `writer:{id}` entry where the caller read it already (null: none); else it is read here.
   */
  static async open(ctx: ClientContext, id: string, record: ConversationRecord, writerIds?: Uint8Array | null, joining = false): Promise<Conversation> {
    const conv = new Conversation(id, record, ctx)
    conv.writerIdsRead = writerIds
    conv.joinPending = joining
    await conv.ready()
    return conv
  }

  /**
   * A conversation that answers from its stored summary (title, unread count, last page)
   * until `ready()` has loaded its documents: a device with many conversations, or a long
   * one, starts without loading them all first.
   */
  static lazy(ctx: ClientContext, id: string, record: ConversationRecord, summary: Summary, writerIds?: Uint8Array | null): Conversation {
    const conv = new Conversation(id, record, ctx)
    conv.writerIdsRead = writerIds
    conv.summary = summary
    conv.summaryStale = false
    return conv
  }

  /**
   * Resolves once the conversation's documents are loaded and it is syncing (at once for one
   * that is). Every method that changes something waits for it by itself.
   */
  ready(): Promise<void> {
    this.loading ??= (async () => {
      await this.load()
      this.loadError = undefined
      if (this.closed) return
      this.connect()
      this.summary = undefined
      this.changed()
    })().catch((err) => {
      // A failed load (storage trouble) is tried again by the next call, not remembered.
      this.loading = undefined
      this.loadError = err
      throw err
    })
    return this.loading
  }

  /** Loaded (not answering from the summary). */
  get loaded(): boolean {
    return this.summary === undefined
  }

  /** Title, from the encrypted inner document. */
  get title(): string {
    if (this.summary) return this.summary.title
    return this.restated.title()
  }

  private get membership(): MembershipState {
    return this.book.state
  }

  /**
   * Why the relay refused this conversation for good (removed from it, an invite that no longer
   * works), or undefined. Sends are then refused with it; joining again by a fresh invite
   * (`client.join`) opens the conversation anew.
   *
   * @example
   * ```ts
   * if (conv.refusal) showBanner(conv.refusal.message)
   * ```
   */
  get refusal(): PetrelError | undefined {
    return this.denied
  }

  /**
   * The relay itself refused this conversation for good (not only this device's records, as
   * after a leave made offline): a listing of it by the relay after that means its person was
   * added back.
   *
   * @internal The client's discovery reads it; apps read `refusal`.
   * @example
   * ```ts
   * if (conv.deniedByRelay && relayListsItAgain) reopen(conv.id)
   * ```
   */
  get deniedByRelay(): boolean {
    // Cleared with the refusal (`retry` reconnects): a listing after a working reopen is no add back.
    return this.refusedByRelay && this.denied !== undefined
  }

  /** The key epoch this device seals under: the conversation's current one, once we hold its key. */
  get epoch(): number {
    const current = this.membership.epoch
    if (this.record.keys.has(current)) return current
    const held = [...this.record.keys.keys()]
    if (held.length === 0) return current
    const older = held.filter((e) => e <= current)
    // A 'from-join' member may hold only a key newer than the records it has folded so far.
    return older.length > 0 ? Math.max(...older) : Math.max(...held)
  }

  private async load(): Promise<void> {
    const { store } = this.ctx
    const recordSeqs = await store.get(keyOf.recordSeqs(this.id))
    if (recordSeqs) this.book.loadSeqs(recordSeqs)
    const deferred = await store.get(keyOf.deferred(this.id))
    // A stored summary not marked stale must be marked by our first write (see commit).
    if (this.summaryStale) {
      const [summary, stale] = await Promise.all([store.get(summaryKey(this.id)), store.get(staleSummaryKey(this.id))])
      this.summaryStale = summary === undefined || stale !== undefined
    }
    const verification = await store.get(keyOf.verification(this.id))
    if (verification) this.checks.load(verification)
    const [outerRows, innerRows, ownRows, sentRows, bindings, cursor, readCursor, receipts, seqs, seqBatches, stillMissing, lostKeys, writerIds] = await Promise.all([
      store.loadLog(this.id, 'outer'),
      store.loadLog(this.id, 'inner'),
      store.list(keyOf.ownPrefix(this.id)),
      store.list(keyOf.sentPrefix(this.id)),
      store.get(keyOf.bindings(this.id)),
      store.get(keyOf.cursor(this.id)),
      store.get(keyOf.readCursor(this.id)),
      store.get(keyOf.receipts(this.id)),
      store.list(keyOf.messageSeqPrefix(this.id)),
      store.list(keyOf.messageSeqsPrefix(this.id)),
      store.get(keyOf.stillMissing(this.id)),
      store.get(keyOf.lostKeys(this.id)),
      this.writerIdsRead === undefined ? store.get(keyOf.writerIds(this.id)) : (this.writerIdsRead ?? undefined),
    ])
    if (stillMissing) this.missing.restore(decodeCursor(stillMissing))
    if (lostKeys) for (const key of decodeLostKeys(lostKeys)) this.lostKeys.set(toBase64Url(keyCheckOf(key)), key)
    const compact: Batch = { compact: [] }
    for (const [doc, rows, name] of [
      [this.outer, outerRows, 'outer'],
      [this.doc, innerRows, 'inner'],
    ] as const) {
      if (rows.length === 0) continue
      // One transaction over every row: linear, where Y.mergeUpdates of thousands of rows is not
      // (it was 1.2 s of a 1.8 s open of 10k messages). The compacted row is the resulting state.
      doc.transact(() => {
        for (const row of rows) applyUpdate(doc, row.bytes, ORIGIN_LOAD)
      }, ORIGIN_LOAD)
      if (rows.length > COMPACT_AFTER_ROWS) {
        compact.compact!.push({ convId: this.id, doc: name, throughId: rows[rows.length - 1]!.id, merged: encodeState(doc) })
      }
    }
    this.appendedRows = 0
    if (compact.compact!.length > 0) await store.commit(compact)
    // Once, here: rows naming messages that are no longer theirs are rewritten, and format-1
    // rows become rows per envelope.
    const tidy = this.own.load(ownRows, sentRows)
    // Refused as stale before the last stop and not sealed again yet: sealed again once this
    // device holds the current key (at the end of the load, or when the key comes).
    for (const [msgId, state] of this.own) if (state.stale && state.seq === 0) this.reseal.add(msgId)
    // Best effort: what is in memory is right already, and the next start tries again (a full
    // disk must not keep the conversation from opening).
    if (tidy.length > 0) await store.commit({ put: tidy }).catch((err) => this.report(err, 'could not tidy the outbox'))
    if (bindings) this.bindings = decodeBindings(bindings)
    if (cursor) this.cursor.restore(decodeCursor(cursor))
    this.acks.resume(this.cursor.through, readCursor ? decodeCursor(readCursor) : 0)
    if (receipts) this.receiptBook.merge(decodeReceipts(receipts))
    const seqPrefix = keyOf.messageSeqPrefix(this.id).length
    for (const [key, value] of seqs) this.messageSeq.set(key.slice(seqPrefix), decodeCursor(value))
    for (const [, value] of seqBatches) decodeMessageSeqs(value, this.messageSeq)
    const positions: Array<[number, string]> = []
    for (const [msgId, state] of this.own) if (state.seq > 0) positions.push([state.seq, msgId])
    const minePrefix = `${this.ctx.identity.userId}.`
    for (const [msgId, seq] of this.messageSeq) if (msgId.startsWith(minePrefix) && !this.own.has(msgId)) positions.push([seq, msgId])
    this.ownBySeq.addAll(positions)
    // Many small rows (one per received batch) become one, as the log's rows do.
    if (seqBatches.length + seqs.length > COMPACT_AFTER_ROWS) {
      await store.commit({
        put: [
          ...seqs.map(([key]) => [key, null] as [string, null]),
          ...seqBatches.map(([key]) => [key, null] as [string, null]),
          [keyOf.messageSeqs(this.id, batchTag()), encodeMessageSeqs([...this.messageSeq])],
        ],
      })
    }
    await this.foldRecords()
    if (writerIds) this.writerIds.read(writerIds)
    if (deferred) this.held.restore(deferred, this.outer.getMap<Uint8Array>(OUTER_LOG))
    for (const v of this.doc.getMap<StoredMessage>(INNER_MESSAGES).values()) if (v && isClock(v.h) && v.h > this.hlc) this.hlc = v.h
    this.doc.on('update', this.innerListener)
    this.outer.on('update', this.outerListener)
    this.doc.getMap(INNER_MESSAGES).observe((event) => this.changed(event.keysChanged))
    this.doc.getMap(INNER_PROFILES).observe(() => {
      this.restated.profilesChanged()
      this.changed()
    })
    // A title (a rename, or one said again for a newcomer) changes no message: listeners hear
    // of it, and the list stays as it is (rebuilding it took 40-60 ms at 40,000 messages).
    this.doc.getMap(INNER_META).observe(() => this.notify())
    if (this.checks.waiting) void this.checks.verifySoon()
    if (this.reseal.pending) this.reseal.now()
    const fills = await store.get(keyOf.gapFills(this.id))
    if (fills) this.fills.load(decodeGapFills(fills))
  }

  private connect(): void {
    const conn = this.ctx.connection
    conn.register(this.id, {
      admission: () => this.record.admission,
      denied: (reason, message) => this.onDenied(reason, message),
    })
    const missing = this.missing
    const provider = createRoomProvider(conn, this.id, this.outer, {
      writingPart: this.snapshots.writingPart,
      beforeSyncStep1: () => missing.askToSpareParts(),
      malformed: (err) => this.malformedFromRelay(err),
      // About one state a member device, and room for ids a device left behind (writer-ids.ts).
      awarenessLimit: () => 2 * this.membership.devices.size + 8,
    })
    this.presence = new Presence(
      provider.awareness,
      this.id,
      this.ctx.identity.userId,
      (epoch) => this.record.keys.get(epoch),
      () => this.epoch,
      () => this.changed(),
      (deviceId) => this.membership.devices.get(deviceId),
      { id: this.ctx.identity.deviceId, secret: this.ctx.identity.deviceSecret },
    )
    const guard =
      (fn: (r: StrictReader) => void) =>
      (_encoder: unknown, decoder: { arr: Uint8Array; pos: number }) => {
        try {
          fn(new StrictReader(decoder.arr.subarray(decoder.pos)))
        } catch (err) {
          this.malformedFromRelay(err)
        }
      }
    provider.messageHandlers[RoomMessage.Rows] = guard((r) => this.received.rows(readRows(r)))
    provider.messageHandlers[RoomMessage.Ack] = guard((r) => applyAck(this.parts, readAck(r)))
    provider.messageHandlers[RoomMessage.Refused] = guard((r) => applyRefusal(this.parts, readRefused(r)))
    provider.messageHandlers[RoomMessage.Cursor] = guard((r) => this.onCursor(readCursor(r).seq))
    provider.messageHandlers[RoomMessage.Receipts] = guard((r) => this.onReceipts(readReceipts(r)))
    provider.messageHandlers[RoomMessage.Keepalive] = () => {}
    provider.on('sync', (synced: boolean) => {
      if (!synced) return
      // Caught up without a snapshot we could use (none written, or one we cannot read, as a
      // 'from-join' member): stop holding what came after the compacted part.
      if (this.missing.holding) {
        this.afterIncoming(async () => {
          // A snapshot still inflating is what the held updates wait for: it goes first.
          if (this.assembly.inflating) {
            await this.assembly.inflating
            await this.received.pass()
          }
          if (this.missing.stopHolding()) this.retryDeferred()
        }, 'could not apply held messages')
      }
      // Caught up: what still waits in Yjs may wait for history this device cannot read.
      else if (this.doc.store.pendingStructs !== null) this.lostFill.soon()
      this.reopenRetries = 0
      // Once what the catch-up brought is applied: what the relay holds from the last session's
      // ids is known then (writer-ids.ts).
      if (this.writerIds.waiting) {
        void this.incomingTail.then(() => {
          if (this.provider && !this.closed) this.writerIds.resume(CLIENT_ID_EPOCHS)
        })
      }
      this.settleSyncWaiters()
      this.acks.schedule()
      // Once what the catch-up brought is applied (and any snapshot it waits for is known).
      void this.incomingTail.then(() => this.missing.catchUpApplied())
    })
    this.provider = provider
  }

  // ---------------------------------------------------------------- sending

  /**
   * Send a text message. Resolves once it is durable on this device — also offline; its
   * status is `pending` until the relay has stored it. Rejects with `too_large` over the
   * relay's limit, with `storage_failed` when this device could not store it, and, once the
   * relay refused the conversation for good (removed from it, an invite no longer valid), with
   * that refusal (`refused`, `invite_invalid`), writing nothing. While a removal waits for the
   * key to change it resolves once the new key came (nothing is sealed under the old one).
   *
   * @example
   * ```ts
   * const m = await conv.send('hello')
   * console.log(m.status) // 'pending' offline, 'sent' once the relay has it
   * ```
   */
  send(text: string): Promise<Message> {
    return this.accepted(() => this.sendNow(text))
  }

  private async sendNow(text: string): Promise<Message> {
    await this.ready()
    const bytes = this.sendableBytes(text)
    // Refused for good (removed, an invite that no longer works): nothing sent now could go.
    if (this.denied) throw this.denied
    this.hlc = Math.max(Date.now(), this.hlc + 1)
    const id = messageIdFor(this.ctx.identity.userId, this.hlc)
    const value: StoredMessage = { t: text, at: Date.now(), h: this.hlc, n: this.counter++, d: this.ctx.identity.deviceId }
    // Sends made in the same turn resume from `ready()` one after another and share a batch.
    await this.sends.add(id, value, bytes)
    return this.message(id)!
  }

  /** The UTF-8 bytes of `text`, which `send` takes; throws the error `send` would otherwise. */
  private sendableBytes(text: unknown): number {
    if (typeof text !== 'string') throw new PetrelError(ErrorCode.InvalidArgument, 'text must be a string')
    const bytes = utf8Length(text)
    const limit = Math.min(MAX_TEXT_BYTES, this.ctx.connection.maxEnvelopeBytes - 1024)
    if (bytes > limit) throw new PetrelError(ErrorCode.TooLarge, `message is ${bytes} bytes; the limit is ${limit}`, { conversationId: this.id })
    return bytes
  }

  /**
   * Settles once what was queued for sealing before is sealed and sent, and the commit before
   * its own is stored (or 2 ms went by: see seal-queue.ts). Sends made meanwhile wait for it
   * and then share one batch: one signature, one transaction, one envelope. Under load the
   * batches grow with the load instead of staying one turn's worth: at 10,000 sends a second,
   * two signatures per few messages were a fifth of the sender's time. Not while the conversation key has not arrived: the messages are then written (and
   * shown, pending) at once, and sealed when it comes.
   */
  private sealerFree(): Promise<unknown> {
    return this.record.keys.size === 0 ? Promise.resolve() : this.outgoing
  }

  /** Run a local inner change and return when its envelope is durable locally. */
  private writeInner(change: () => void, tags: string[] = []): Promise<void> {
    this.tagging = tags
    let job: Promise<void> | undefined
    const off = (update: Uint8Array, origin: unknown) => {
      if (origin !== ORIGIN_REMOTE && origin !== ORIGIN_LOAD) job = this.queueSeal(update, tags)
    }
    this.doc.on('update', off)
    try {
      this.doc.transact(change)
    } finally {
      this.doc.off('update', off)
      this.tagging = undefined
    }
    return job ?? Promise.resolve()
  }

  private readonly innerListener = (update: Uint8Array, origin: unknown) => this.onInnerUpdate(update, origin)
  private readonly outerListener = (update: Uint8Array, origin: unknown) => {
    if (origin === ORIGIN_LOCAL_OUTER) this.capturedOuter.push(update)
  }

  private onInnerUpdate(update: Uint8Array, origin: unknown): void {
    if (origin === ORIGIN_REMOTE || origin === ORIGIN_LOAD || this.tagging !== undefined) return
    // App-defined state written straight to `conv.doc`: sealed and synced like messages.
    void this.queueSeal(update, []).catch((err) => this.report(err, 'could not store a change'))
  }

  /** Queue an inner update for sealing (seal-queue.ts); resolves once its envelope is stored. */
  private queueSeal(update: Uint8Array, tags: string[], othersOnly = false, puts?: Array<[string, Uint8Array | null]>): Promise<void> {
    return this.seals.add(update, tags, othersOnly, puts)
  }

  /** Updates counted toward snapshots and the next key rotation. */
  private countEnvelopes(epoch: number, n: number, sending: boolean): void {
    this.snapshots.counted(n, sending)
    this.rotation.counted(epoch, n, sending)
  }

  /** Rotate, unless this device is rotating already (key-rotation.ts). */
  private rotateOnce(): Promise<void> {
    return this.rotation.once()
  }

  /**
   * Start a new key epoch for the current members (scheduled rotation, or after someone left).
   *
   * @internal The client's and the engine's own; not part of the app API.
   */
  rotateKey(): Promise<void> {
    return this.rotation.rotate()
  }

  /**
   * Take `key` as this device's key of `epoch`: the writes that store it. The epoch started
   * again after the relay refused ours for it: what we sealed under the refused key is refused
   * as stale and sealed again, which needs that key to open it. Kept as lost, as a key that
   * loses a race is; overwritten, those messages stayed pending for good, and the later changes
   * of their inner client waited at every other device.
   */
  private adoptEpochKey(epoch: number, key: Uint8Array): Array<[string, Uint8Array]> {
    const held = this.record.keys.get(epoch)
    const puts: Array<[string, Uint8Array]> = []
    if (held && !constantTimeEqual(keyCheckOf(held), keyCheckOf(key))) {
      this.lostKeys.set(toBase64Url(keyCheckOf(held)), held)
      puts.push([keyOf.lostKeys(this.id), encodeLostKeys(this.lostKeys.values())])
    }
    this.record.keys.set(epoch, key)
    puts.push([keyOf.conv(this.id), encodeConversationRecord(this.record)])
    return puts
  }

  /** Write to the outer log locally; returns what was written and the outer updates it made. */
  private writeOuter<T>(fn: (log: Y.Map<Uint8Array>, rec: Y.Map<Uint8Array>) => T): { key: T; updates: Uint8Array[] } {
    this.capturedOuter = []
    let key: T | undefined
    this.outer.transact(() => {
      key = fn(this.outer.getMap<Uint8Array>(OUTER_LOG), this.outer.getMap<Uint8Array>(OUTER_RECORDS))
    }, ORIGIN_LOCAL_OUTER)
    const updates = this.capturedOuter
    this.capturedOuter = []
    return { key: key as T, updates }
  }

  /**
   * Run `job` in the send queue: after everything queued before is sealed and sent, and before
   * what is queued after (its failure does not stop the queue).
   */
  private afterOutgoing<T>(job: () => T | Promise<T>): Promise<T> {
    const run = this.outgoing.then(job)
    this.outgoing = run.then(
      () => undefined,
      () => undefined,
    )
    return run
  }

  /**
   * What the conversation's parts read and ask of it, as one object: each part is given it
   * typed as its own host interface (declared in its file) and sees only that.
   */
  private partsHost(): PartsHost {
    const conv = this
    const { ctx, id } = this
    return {
      id,
      convId: id,
      ctx,
      store: ctx.store,
      book: this.book,
      get own() {
        return conv.own
      },
      get inner() {
        return conv.doc
      },
      get outer() {
        return conv.outer
      },
      get closed() {
        return conv.closed
      },
      get membership() {
        return conv.membership
      },
      get epoch() {
        return conv.epoch
      },
      epochKeys: this.record.keys,
      get cursor() {
        return conv.cursor.through
      },
      get coverableThrough() {
        return conv.held.coverableThrough(conv.cursor.through)
      },
      get incomingTail() {
        return conv.incomingTail
      },
      get outgoing() {
        return conv.outgoing
      },
      get settled() {
        return conv.provider?.synced === true && conv.cursor.waiting === 0 && !conv.missing.holding
      },
      get held() {
        return conv.held.all
      },
      get awaitingWelcome() {
        return conv.awaitingWelcome()
      },
      get awareness() {
        return conv.provider?.awareness
      },
      get bindings() {
        return conv.bindings
      },
      get clientEpoch() {
        return conv.clientEpoch
      },
      set clientEpoch(epoch) {
        conv.clientEpoch = epoch
      },
      userId: ctx.identity.userId,
      deviceId: ctx.identity.deviceId,
      deviceSecret: ctx.identity.deviceSecret,
      readReceipts: ctx.readReceipts,
      get maxEnvelopeBytes() {
        return ctx.connection.maxEnvelopeBytes
      },
      ready: () => this.ready(),
      assertOpen: () => this.assertOpen(),
      keys: () => this.keys(),
      currentKey: () => this.record.keys.get(this.membership.epoch),
      keepKey: async (epoch, key) => {
        this.record.keys.set(epoch, key)
        await this.commit({ put: [[keyOf.conv(id), encodeConversationRecord(this.record)]] })
      },
      name: (userId) => this.restated.name(userId),
      socket: () => {
        const ws = this.provider?.ws
        return ws && this.provider?.synced && ws.readyState === 1 ? ws : undefined
      },
      envelope: (key) => {
        const bytes = this.outer.getMap<Uint8Array>(OUTER_LOG).get(key)
        return bytes instanceof Uint8Array ? bytes : undefined
      },
      originalUpdate: (key) => this.originalUpdate(key),
      refusedTombstones: () => this.refusedTombstones(),
      storedBy: (device) => this.receiptBook.byDevice.get(device)?.stored ?? 0,
      sealerFree: () => this.sealerFree(),
      writeInner: (change, ids) => {
        // Pending from the moment they are in the document (and shown): sealed later, they had
        // no outbox state until then and read as ✓ for that while, then went back to the clock.
        this.own.writing(ids)
        return this.writeInner(change, ids)
      },
      seal: (update, ids) => this.queueSeal(update, ids),
      afterOutgoing: (job) => this.afterOutgoing(job),
      writeOuter: (fn) => this.writeOuter(fn).updates,
      writeRecords: (records) => this.writeRecords(records),
      foldRecords: () => this.foldRecords(),
      incomingSettled: () => this.incomingSettled(),
      idsTaken: async () => {
        if (this.writerIds.held) await this.writerIds.taken()
      },
      storeOuter: async (updates) => {
        await this.commit({ append: updates.map((bytes) => ({ convId: id, doc: 'outer' as const, bytes })) })
        this.appendedRows += updates.length
      },
      storeRow: (put) => this.commit({ put: [put] }),
      saveRows: (puts) => this.landing(this.commit({ put: puts }), 'could not store a failure'),
      changed: (keys?: Iterable<string>) => this.changed(keys),
      statusesChanged: (ids) => this.statusesChanged(ids),
      reportError: (err) => ctx.reportError(err),
      report: (err, context) => this.report(err, context),
      get reseal() {
        return conv.reseal
      },
      get fills() {
        return conv.fills
      },
      roomAgain: (seq) => this.fills.roomAgain(seq),
      saveFills: (updates) =>
        this.landing(this.commit({ put: [[keyOf.gapFills(id), updates.length > 0 ? encodeGapFills(updates) : null]] }), 'could not store gap fills'),
      get writerIds() {
        return conv.writerIds
      },
      commit: (batch: Batch, options?: CommitOptions) => this.commit(batch, options),
      rotateOnce: () => this.rotateOnce(),
      addDevices: (userPub, certs, history) => this.memberActions.addDevices(userPub, certs, history),
      readded: this.readded,
      sealForOthers: (update: Uint8Array, puts?: Put[]) => this.queueSeal(update, [], true, puts),
      get source() {
        return conv.source
      },
      // Closed: at once (the seal then fails `closed`). A send accepted just before close() may
      // come to wait after close woke the waiters, and waited for good, and close with it.
      firstKey: () => (this.closed ? Promise.resolve() : new Promise<void>((resolve) => this.keyWaiters.push(resolve))),
      get rotationDue() {
        return conv.membership.rotationDue
      },
      rotationDone: () => (this.closed ? Promise.resolve() : new Promise<void>((resolve) => this.rotationWaiters.push(resolve))),
      get handedToRelay() {
        return conv.provider?.ws?.readyState === 1
      },
      writeOuterKeys: (fn) => this.writeOuter(fn),
      appended: (rows) => {
        this.appendedRows += rows
      },
      storeFailed: () => {
        this.localWriteFailed = true
      },
      sealedDurably: (epoch, n) => this.countEnvelopes(epoch, n, true),
      get snapshotBusy() {
        return conv.snapshots.busy
      },
      adoptEpochKey: (epoch, key) => this.adoptEpochKey(epoch, key),
      storeBookkeeping: (puts) => this.landing(this.commit({ put: puts }, COMMIT_SOON), 'could not store acknowledgements'),
      recordSeqsRow: () => [keyOf.recordSeqs(id), this.book.encodeSeqs()],
      get ownBySeq() {
        return conv.ownBySeq
      },
      get caughtUp() {
        return conv.provider?.synced === true
      },
      ownRowStored: (seq) => this.advanceCursor(seq),
      recordSeqsMoved: () => this.bookkeeping.recordSeqsMoved(),
      storeSoon: (puts) => this.bookkeeping.add(puts),
      get caughtUpSocket() {
        const provider = conv.provider
        return provider?.synced ? (provider.ws ?? undefined) : undefined
      },
      storeStillMissing: (through) =>
        this.landing(this.commit({ put: [[keyOf.stillMissing(id), through > 0 ? encodeCursor(through) : null]] }, COMMIT_SOON), 'could not store which history is still missing'),
      reject: (code, message) => this.reject(code, message),
      landing: (commit, failure) => this.landing(commit, failure),
      afterIncoming: (job, failure) => this.afterIncoming(job, failure),
      receivePass: () => this.received.pass(),
      get provider() {
        return conv.provider
      },
      innerListener: this.innerListener,
      outerListener: this.outerListener,
      rowCursor: this.cursor,
      get heldEnvelopes() {
        return conv.held
      },
      get missing() {
        return conv.missing
      },
      get assembly() {
        return conv.assembly
      },
      get checks() {
        return conv.checks
      },
      get lostFill() {
        return conv.lostFill
      },
      get acks() {
        return conv.acks
      },
      messageSeq: this.messageSeq,
      seeClock: (h) => {
        if (h > this.hlc) this.hlc = h
      },
      listed: (messageId) => this.shown.listed(messageId),
      receivedCounted: (epoch, n) => this.countEnvelopes(epoch, n, false),
    }
  }

  /**
   * Put signed records into the outer log (genesis, invites, joins), durably.
   *
   * @internal The client's and the engine's own; not part of the app API.
   */
  async writeRecords(records: Uint8Array[]): Promise<void> {
    await this.ready()
    const job = this.afterOutgoing(async () => {
      // Compared in place: encoding every record in the log to text for each write cost
      // O(records) allocation per key rotation, so O(epochs²) over a conversation's life.
      const logged = [...this.outer.getMap<Uint8Array>(OUTER_RECORDS).values()]
      const fresh = records.filter((v) => !logged.some((have) => constantTimeEqual(have, v)))
      if (fresh.length === 0) return undefined
      if (this.writerIds.held) await this.writerIds.taken()
      const { updates } = this.writeOuter((_log, rec) => {
        // Keys derive from the item id like envelope keys: unique, so no write ever conflicts
        // (a conflict would make Yjs delete the loser, and outer updates may not delete).
        const keys: string[] = []
        for (const v of fresh) {
          const key = envelopeKey(this.outer.clientID, Y.getState(this.outer.store, this.outer.clientID))
          keys.push(key)
          rec.set(key, v)
        }
        this.book.wrote(keys)
      })
      // Folded at once, the commit landing meanwhile: the sends queued behind this job seal
      // under what the records say (a new epoch's key), and commits land in the order issued,
      // so none of theirs lands before the records. Waiting here for the disk held every send
      // of the conversation for a commit (0.4–16 ms) at each scheduled key rotation, ten a
      // second at 10,000 messages a second.
      const stored = this.commit({ append: updates.map((bytes) => ({ convId: this.id, doc: 'outer' as const, bytes })) })
      stored.catch(() => undefined)
      await this.foldRecords()
      return { stored }
    })
    await (await job)?.stored
  }

  /**
   * Make an invite: a link-safe token; holding it is enough to join, with every admin
   * offline. Its secret never reaches the relay.
   *
   * @example
   * ```ts
   * const token = await conv.invite({ expiresIn: 86_400_000 })
   * const bobConv = await bob.join(token)
   * ```
   */
  invite(options: InviteOptions = {}): Promise<string> {
    return this.memberActions.invite(options)
  }

  /**
   * Stop an invite from working (joins already made stay).
   *
   * @example
   * ```ts
   * await conv.revokeInvite(token)
   * ```
   */
  revokeInvite(token: string): Promise<void> {
    return this.memberActions.revokeInvite(token)
  }

  /**
   * Members with their role and devices, from verified records.
   *
   * @example
   * ```ts
   * for (const m of conv.members()) console.log(m.name, m.role, m.devices.length)
   * ```
   */
  members(): MemberInfo[] {
    return this.memberActions.members()
  }

  /**
   * Remove a member (admins only). A new key epoch starts at once, wrapped for the remaining
   * member devices only: the removed person decrypts nothing sent from now on, and the relay
   * stops serving their devices.
   *
   * @example
   * ```ts
   * await conv.removeMember(bob.userId)
   * ```
   */
  removeMember(userId: string): Promise<void> {
    return this.memberActions.removeMember(userId)
  }

  /** Make a member an admin (admins only). */
  makeAdmin(userId: string): Promise<void> {
    return this.memberActions.makeAdmin(userId)
  }

  /**
   * Add a person by their public identity (`client.publicIdentity()` on their device), with
   * every device they have; admins only. They need no invite and learn of the conversation
   * from the relay the next time any of their devices is online. `history: 'full'` (default)
   * gives them every key this device holds; `'from-join'` starts a new key epoch first and
   * gives them only that one, so they read nothing sent before.
   *
   * @example
   * ```ts
   * await conv.addMember(await bob.publicIdentity())
   * ```
   */
  addMember(publicIdentity: string, options: { history?: 'full' | 'from-join' } = {}): Promise<void> {
    return this.memberActions.addMember(publicIdentity, options)
  }

  /**
   * Add devices of one person (they must all be certified by `userPub`). Used by `addMember`
   * and by the client to keep a person's linked devices in every conversation they are in.
   *
   * @internal The client's and the engine's own; not part of the app API.
   */
  addDevices(userPub: Uint8Array, certs: DeviceCertificate[], history: 'full' | 'from-join' = 'full'): Promise<void> {
    return this.memberActions.addDevices(userPub, certs, history)
  }

  /**
   * Take one device of a person out for good (theirs, or any as an admin), and change the key
   * at once: whoever unlinks starts the new epoch, admin or not, so the unlinked device never
   * holds the key of anything sent afterwards.
   *
   * @internal The client's and the engine's own; not part of the app API.
   */
  async unlinkDevice(devicePub: Uint8Array): Promise<void> {
    await this.ready()
    this.assertOpen()
    await this.writeRecords([await this.ctx.signRecord(RecordKind.Unlink, encodeUnlinkBody({ room: this.id, devicePub, at: Date.now() }))])
    // From here on later folds retry the rotation if this one loses a race.
    this.unlinkedHere = true
    if (this.membership.rotationDue) await this.rotateOnce()
  }

  /**
   * The join that opened this conversation has its answer (or went on offline): refusals from
   * here on are told on `error`.
   *
   * @internal The client calls it from `join`.
   */
  joinSettled(): void {
    this.joinPending = false
  }

  /**
   * Verified membership, for the client's bookkeeping of a person's devices.
   *
   * @internal The client's and the engine's own; not part of the app API.
   */
  get membershipState(): MembershipState {
    return this.membership
  }

  /**
   * Leave the conversation; an admin starts a new key epoch when they see it. The only admin
   * leaving makes the longest-standing member an admin first.
   *
   * @example
   * ```ts
   * await conv.leave()
   * conv.refusal?.message // 'you left this conversation'
   * ```
   */
  leave(): Promise<void> {
    return this.memberActions.leave()
  }

  /**
   * A short number both people can compare (in person, on a call) to check that no one sits
   * in the middle: the same on both devices exactly when both hold the same two identities.
   *
   * @example
   * ```ts
   * conv.safetyNumber(bob.userId) // '12345 67890 …' — Bob's screen shows the same
   * ```
   */
  safetyNumber(userId: string): string {
    // Anyone's identity will do (a member's, or someone's about to be added), but a string that
    // is none gave a number all the same, for a person nobody is.
    let userPub: Uint8Array | undefined
    try {
      userPub = typeof userId === 'string' && /^[A-Za-z0-9_-]{43}$/.test(userId) ? fromBase64Url(userId) : undefined
    } catch {
      userPub = undefined
    }
    if (userPub?.length !== 32) throw new PetrelError(ErrorCode.InvalidArgument, 'not a userId', { conversationId: this.id })
    return safetyNumber(this.ctx.identity.userPub, userPub)
  }

  /**
   * Give this user's name here (what `createClient`'s `name` says; the client does so as it
   * joins): in the plain profile entry, or in the current epoch's once it was said again for a
   * newcomer (restated-context.ts).
   *
   * @example
   * ```ts
   * await conv.sayName('Alice Martin')
   * ```
   */
  async sayName(name: string): Promise<void> {
    assertName(name, this.id)
    return this.accepted(async () => {
      await this.ready()
      const write = this.restated.naming(this.ctx.identity.userId, name)
      return this.writeInner(() => write(this.doc.getMap<Profile>(INNER_PROFILES)))
    })
  }

  /**
   * Give the conversation a new title, for every member (any member may). Write it here rather
   * than to `doc`'s `meta` map: once the title was said again for a newcomer
   * (restated-context.ts), a plain write there is outranked.
   *
   * @example
   * ```ts
   * await conv.setTitle('Lisbon, May')
   * ```
   */
  async setTitle(title: string): Promise<void> {
    assertTitle(title, this.id)
    return this.accepted(async () => {
      await this.ready()
      if (this.denied) throw this.denied
      const write = this.restated.titling(title)
      return this.writeInner(() => write(this.doc.getMap(INNER_META)))
    })
  }

  /**
   * Write app state in the inner document as the local device, in one transaction (sealed and
   * synced like messages). For the title and this user's name use `setTitle` and `sayName`:
   * written here, they are outranked once said again for a newcomer (restated-context.ts).
   *
   * @example
   * ```ts
   * await conv.setInner((doc) => doc.getMap('reactions').set(`${messageId}:${me}`, '👍'))
   * ```
   */
  setInner(fn: (doc: Y.Doc) => void): Promise<void> {
    return this.accepted(async () => {
      await this.ready()
      return this.writeInner(() => fn(this.doc))
    })
  }

  /** Why the last load failed (storage trouble, corrupt rows), if it did. */
  private loadError: unknown
  /** API calls accepted before `close()` and still running: close waits for them before it flushes. */
  private readonly inFlight = new Set<Promise<unknown>>()

  /**
   * Run a write the app asked for now: refused once closed, else carried out even if `close()`
   * comes before it is done (an app's `conv.send(x); await client.close()` lost x: the send was
   * still waiting for `ready()` when the close began, and was refused as closed).
   */
  private accepted<T>(job: () => Promise<T>): Promise<T> {
    // Closed because its rows could not be read (the client gave it up): that error, not `closed`.
    if (this.closed) return Promise.reject(this.loadError ?? new PetrelError(ErrorCode.Closed, 'conversation is closed', { conversationId: this.id }))
    const run = job()
    this.inFlight.add(run)
    const done = () => this.inFlight.delete(run)
    run.then(done, done)
    return run
  }

  // ---------------------------------------------------------------- receiving

  /** Queue `job` on the receive chain (received-rows.ts), after what is queued there; its failure is reported with `failure`. */
  private afterIncoming(job: () => unknown, failure: string): void {
    this.received.after(job, failure)
  }

  /** The receive chain, for a job that must run after every page received so far (and before later ones). */
  private get incomingTail(): Promise<void> {
    return this.received.tail
  }

  /** Every queued receive job done and its batch stored. */
  private incomingSettled(): Promise<void> {
    return this.received.settled()
  }

  /** A commit issued from the receive chain that the chain need not wait for (received-rows.ts). */
  private landing(commit: Promise<void>, failure: string, durable?: () => void): void {
    this.received.landing(commit, failure, durable)
  }

  /** Process held envelopes again (after their snapshot, or once it is clear none comes). */
  private retryDeferred(): void {
    this.received.retryHeld()
  }

  private reject(code: ErrorCode, message: string): void {
    this.received.reject(code, message)
  }


  // ---------------------------------------------------------------- history snapshots


  /**
   * Seal the inner document as a snapshot and ask the relay to compact what it covers: a
   * fresh device then downloads one snapshot and the tail, not every update since the start.
   * `state` is for tests that play a dishonest member.
   *
   * @internal The client's and the engine's own; not part of the app API.
   */
  async writeSnapshot(state?: Uint8Array): Promise<void> {
    await this.ready()
    this.assertOpen()
    return this.snapshots.write(state)
  }

  /**
   * Tombstones of our messages that failed for good (tombstone.ts). They stay on this device,
   * failed, to be retried or discarded, but are not history: a snapshot carries their
   * tombstones in their place, or members would read from it what the author sees as never
   * delivered.
   */
  private refusedTombstones(): Uint8Array[] {
    const envelopes = new Set<string>()
    for (const state of this.own.values()) if (state.refused && state.seq === 0 && state.envelopeKey !== '') envelopes.add(state.envelopeKey)
    const out: Uint8Array[] = []
    for (const key of envelopes) {
      const update = this.originalUpdate(key)
      if (update) out.push(tombstoneUpdate(update))
    }
    return out
  }


  /**
   * Rebuild membership from every record in the outer log, in relay order, pick up epoch
   * keys wrapped for this device, and act on what changed (re-seal refused messages under a
   * new key; rotate the key after someone left).
   */
  private async foldRecords(): Promise<void> {
    const epochBefore = this.membership.epoch
    const devicesBefore = this.membership.devices
    const invitesBefore = this.membership.invites
    const membersBefore = new Set(this.membership.members.keys())
    const bad = await this.book.fold(this.outer.getMap<Uint8Array>(OUTER_RECORDS))
    // A device that came in may read only part of the history (a 'from-join' member's, or one
    // that gets the history compacted into a snapshot it cannot open): the same fresh start.
    const added = [...this.membership.devices.keys()].some((d) => !devicesBefore.has(d))
    const newDevice = devicesBefore.size > 0 && added
    // A 'from-join' invite starts the epoch its joiners read from, before any of them is here.
    const fromJoinInvite = [...this.membership.invites].some(([k, inv]) => inv.history === 'from-join' && !invitesBefore.has(k))
    this.clientEpoch ??= epochBefore
    const epochs = this.membership.epoch - this.clientEpoch
    const newEpoch = this.membership.epoch > epochBefore
    // A device waiting for an admin to give it a key it lacks (`devicesToWelcome`) reads the new
    // epoch now: what we write in it must not wait in Yjs behind what we wrote in the one it lacks.
    const awaited = newEpoch && devicesToWelcome(this.membership).some((w) => w.welcomer !== undefined)
    if (newDevice || fromJoinInvite || awaited || (newEpoch && epochs >= CLIENT_ID_EPOCHS)) {
      // Someone may be here who cannot read what came before. Yjs holds back a client's change
      // until its earlier clocks arrive, so write from a fresh client id: what we write from
      // now on depends on nothing they cannot decrypt. Not at every epoch (as until the
      // twenty-sixth session): Yjs's transactions cost O(client ids) (BENCHMARKS.md), and a
      // scheduled rotation every 1,000 messages gave each writing device a new one each time.
      this.doc.clientID = randomClientId()
      this.clientEpoch = this.membership.epoch
    }
    // Someone came who may read only from here: a person new here ('from-join', or let back in
    // so), or a 'from-join' invite's joiners to be. Not a device of a member (it holds its
    // person's keys), and not at the first fold of an open (every record ever written is new).
    const newPerson = membersBefore.size > 0 && [...this.membership.members.keys()].some((u) => !membersBefore.has(u))
    if (devicesBefore.size > 0 && (newPerson || fromJoinInvite) && this.membership.epoch > 0) this.restateDue = true
    // At an open: others said theirs again at this epoch and ours is missing (this device closed
    // before it could), so a round of saying again is under way.
    else if (devicesBefore.size === 0 && this.membership.epoch > 0 && this.restated.saidAgainAt(this.membership.epoch)) this.restateDue = true
    if (bad > 0) this.ctx.reportError(new PetrelError(ErrorCode.EnvelopeRejected, `ignored ${bad} record(s) whose signature does not verify`, { conversationId: this.id }))
    // Envelopes held for a sender's join may open now, whichever path folded it in.
    if (added && this.held.size > 0) this.retryDeferred()
    let lostOne = false
    const lose = (lost: Uint8Array) => {
      this.lostKeys.set(toBase64Url(keyCheckOf(lost)), lost)
      lostOne = true
    }
    if (this.book.unwrapKeys(this.record.keys, lose)) {
      // Not waited for: the key is read again from the records (stored in the outer log) if
      // this write were lost, and what is stored after it lands after it. Waited for, every
      // device's received rows stood still for a commit (up to 10 ms) at each key rotation.
      const puts: Array<[string, Uint8Array]> = [[keyOf.conv(this.id), encodeConversationRecord(this.record)]]
      if (lostOne) puts.push([keyOf.lostKeys(this.id), encodeLostKeys(this.lostKeys.values())])
      this.landing(this.commit({ put: puts }), 'could not store the conversation key')
      this.reseal.now()
      if (this.record.keys.size > 0) for (const wake of this.keyWaiters.splice(0)) wake()
      // Envelopes waiting for a key (or for the winner of an epoch race) may open now.
      if (this.held.size > 0) this.retryDeferred()
    } else if (this.membership.epoch > epochBefore && this.reseal.pending) {
      // Our own new epoch, whose key we held before its record folded (unwrapping finds nothing
      // new): what still waits to be sealed again goes now, under it.
      this.reseal.now()
    }
    this.restateIfDue()
    // This person left (here, or on another of their devices, maybe offline): refused from now
    // on, as the relay would say once it hears. Before, a send made offline after a leave waited
    // for good (for a key change that the one who left never sees), and `refusal` said nothing.
    // Not while a join of ours waits for the relay's catch-up, though: its records are folded
    // on the history this device held, which may lack what makes the invite valid (the device
    // that made it, linked after the leave). The relay decides that join; deciding it here
    // rejected a join the relay had taken, and dropped the conversation.
    if (!this.denied && this.selfLeft() && !(this.joinPending && this.provider?.synced !== true)) this.onDenied(Reason.NotMember, 'left', false)
    // Joined again by a fresh invite (its join record folds after the leave): the leave's own
    // refusal, which only this device's records said, ends. Before, the join was refused with
    // "you left this conversation" and the conversation dropped from the list.
    else if (this.denied && this.deniedAsLeft && !this.refusedByRelay && !this.selfLeft()) {
      this.denied = undefined
      this.deniedAsLeft = false
      this.notify()
    }
    const snap = this.membership.snapshot
    this.snapshots.noteLatest(snap ? toBase64Url(snap.snapshotId) : undefined)
    this.presence?.refresh()
    // Membership shows in the list only through this user's ticks (who has received and read
    // what), and ticks only through who is a member since when, on which devices: the rest of
    // the list stands, and after a key rotation (every 1,000 messages) so do the ticks.
    // Rebuilding the list was a 40-60 ms stall at 40,000 messages; re-reading every message of
    // this user's, 20-60 ms on a device that sent them all.
    const shape = ticksShape(this.membership)
    if (shape !== this.ticksShape) {
      this.ticksShape = shape
      this.statusesChanged()
    } else this.notify()
    this.ctx.membershipChanged?.(this)
    this.welcomeJoiners()
    // Someone left: whoever administers the conversation changes the key (the first wins).
    if (!this.membership.rotationDue) {
      this.unlinkedHere = false
      clearTimeout(this.dueRotationTimer)
      this.dueRotationTimer = undefined
      for (const wake of this.rotationWaiters.splice(0)) wake()
    }
    // The device that unlinked someone keeps trying too (its first new epoch may lose a race).
    if (this.membership.rotationDue && (this.book.isAdmin() || this.unlinkedHere) && !this.closed) {
      void this.rotateOnce().catch((err) => this.report(err, 'could not rotate the key'))
    } else if (this.membership.rotationDue && !this.closed && this.dueRotationTimer === undefined && this.membership.devices.has(this.ctx.identity.deviceId)) {
      // Nothing of ours is sealed (or stored) until the key changes, and the admins may all be
      // away (a member left): after a moment any member device changes it. The first epoch
      // wins; the others fold it and stop.
      this.dueRotationTimer = setTimeout(
        () => {
          this.dueRotationTimer = undefined
          if (this.membership.rotationDue && !this.closed) void this.rotateOnce().catch((err) => this.report(err, 'could not rotate the key'))
        },
        500 + Math.random() * 1000,
      )
    }
  }

  /**
   * Say our name and the title again under the current epoch's key, for whoever came and cannot
   * read where they were first said (restated-context.ts). Once we hold that key: sealed under
   * an older one, a newcomer could not read it either. Once an epoch for a person: what this
   * device or another of theirs said already (before a restart, say) is not said again.
   */
  private restateIfDue(): void {
    if (!this.restateDue || this.closed || this.denied) return
    const epoch = this.membership.epoch
    if (!this.record.keys.has(epoch) || !this.membership.devices.has(this.ctx.identity.deviceId)) return
    this.restateDue = false
    const change = this.restated.restatement(this.ctx.identity.userId, epoch)
    if (!change) return
    this.writeInner(() => change(this.doc.getMap<Profile>(INNER_PROFILES), this.doc.getMap(INNER_META))).catch((err) => {
      // Tried again at the next fold (what was said meanwhile is not said twice).
      this.restateDue = true
      this.report(err, 'could not say the title and names again')
    })
  }

  /** This person left the conversation (on this device or another), by the records held here. */
  private selfLeft(): boolean {
    const self = this.ctx.identity.userId
    return this.membership.removedAt.get(self)?.left === true && !this.membership.members.has(self)
  }

  /**
   * Whether an admin is to give this device keys its invite could not carry (`devicesToWelcome`).
   * Not with no admin device left to do it: the wait would be for good.
   */
  private awaitingWelcome(): boolean {
    const me = this.ctx.identity.deviceId
    return devicesToWelcome(this.membership).some((w) => w.device === me && w.welcomer !== undefined)
  }

  /** Joiners (by device and epoch) this device is giving keys to: one add record each. */
  private readonly welcoming = new Set<string>()

  /**
   * A device that joined by an invite made before the current epoch began holds no key of it,
   * nor (a 'full' invite's) of the epochs between the invite's and its join (`devicesToWelcome`):
   * it could neither read nor write until the next rotation, nor ever read those epochs. The
   * invite's signer (or the first admin device) gives it those keys in an add record.
   */
  private welcomeJoiners(late = false): void {
    if (this.closed || this.membership.rotationDue) return
    const me = this.ctx.identity.deviceId
    let others = false
    for (const w of devicesToWelcome(this.membership)) {
      const key = `${w.device}:${this.membership.epoch}`
      if (this.welcoming.has(key)) continue
      // The welcomer first; should it be away, any admin device after a while (an add for a
      // device already given the key is refused by nobody, only spent).
      if (w.welcomer !== me && !late) {
        others = true
        continue
      }
      this.welcoming.add(key)
      this.memberActions.welcome(w.device, w.userId, w.invite).catch((err) => {
        this.welcoming.delete(key)
        this.report(err, 'could not give a new member the keys its invite lacked')
      })
    }
    if (others && !late && this.welcomeTimer === undefined && this.book.isAdmin() && this.record.keys.has(this.membership.epoch)) {
      this.welcomeTimer = setTimeout(
        () => {
          this.welcomeTimer = undefined
          this.welcomeJoiners(true)
        },
        5000 + Math.random() * 5000,
      )
    }
  }

  /** An admin device's turn to welcome joiners whose welcomer has not (see welcomeJoiners). */
  private welcomeTimer: ReturnType<typeof setTimeout> | undefined

  private onReceipts(entries: ReceiptEntry[]): void {
    const moved = this.receiptBook.merge(entries)
    if (!moved) return
    this.statusesChanged(this.ownBySeq.between(moved.after, moved.through))
    this.bookkeeping.add([[keyOf.receipts(this.id), encodeReceipts([...this.receiptBook.byDevice.values()])]])
    // A snapshot this device's send made due waited for the others to catch up: maybe now.
    this.snapshots.receiptsMoved()
  }

  /**
   * The relay learns how far this device holds also from its own rows (compaction waits for
   * it), but only once every row received before the ack is applied and stored: the cursor's
   * write is issued from the incoming chain, in the ack's place, behind them (commits land in
   * the order issued). The chain does not wait for the write to land: awaited there, a device
   * sending 2,000 messages a second queued two commits per ack one after another, and its
   * incoming chain fell behind by seconds (6.6 s after 20,000 messages); what others sent it
   * waited as long. (Acks are not merged into one job: a job that took a later ack's value
   * could write a cursor past rows queued between the two, not yet stored.)
   */
  private advanceCursor(seq: number): void {
    this.afterIncoming(() => {
      // Our own row says nothing of the rows before it: only right after the cursor does it
      // move it. A ✓ that overtook rows stored earlier (or rows still waiting for their
      // predecessors) waits for them, or this device would tell their senders ✓✓ for
      // messages it cannot show yet.
      const through = this.cursor.ownRowAcked(seq)
      if (through === undefined) return
      this.landing(this.commit({ put: [[keyOf.cursor(this.id), encodeCursor(through)]] }, COMMIT_SOON), 'could not store the cursor', () => {
        this.acks.stored(through)
        this.acks.schedule()
      })
    }, 'could not store the cursor')
  }


  /**
   * Mark everything currently shown as read (blue ✓✓ for its senders, unless this device
   * turned read receipts off).
   *
   * @example
   * ```ts
   * conv.subscribe(() => { if (document.hasFocus()) void conv.markRead() })
   * ```
   */
  async markRead(): Promise<void> {
    await this.ready()
    this.assertOpen()
    // Read no further than is stored: a read receipt never runs ahead of the delivery one.
    await this.incomingSettled()
    if (!this.acks.read(this.cursor.through)) return
    await this.commit({ put: [[keyOf.readCursor(this.id), encodeCursor(this.acks.readSeq)]] })
    // What this device read moves no ticks of this user's (their recipients are the others):
    // listeners hear of the unread count. Re-reading every own row here ran per batch in apps
    // that mark read on each change.
    this.notify()
    this.acks.schedule()
  }

  /** Messages from others not yet marked read on this device. */
  unreadCount(): number {
    if (this.summary) return this.summary.unread
    let n = 0
    for (const m of this.messages()) if (!m.mine && (this.messageSeq.get(m.id) ?? 0) > this.acks.readSeq) n++
    return n
  }

  /**
   * WhatsApp's "message info": when each member's devices stored and displayed a message.
   *
   * @example
   * ```ts
   * for (const r of conv.receipts(m.id)) console.log(r.member, r.deliveredAt, r.readAt)
   * ```
   */
  receipts(messageId: string): MemberReceipt[] {
    const own = this.own.get(messageId)
    const v = this.doc.getMap<StoredMessage>(INNER_MESSAGES).get(messageId)
    if (!own || !v || own.seq === 0) return []
    const author = this.ctx.identity.userId
    return this.receiptBook.perMember(this.membership, this.receiptBook.recipients(this.membership, author, v.at, own.seq), own.seq, this.ctx.readReceipts)
  }

  /** Show others that this device's user is typing; clears itself after a few seconds. */
  setTyping(typing: boolean): void {
    this.presence?.setTyping(typing)
  }

  /** Display names of members typing now. */
  typing(): string[] {
    return (this.presence?.typingUsers() ?? []).map((u) => this.restated.name(u) || u.slice(0, 8))
  }

  private onCursor(seq: number): void {
    if (seq <= this.cursor.through) return
    this.afterIncoming(async () => {
      const through = this.cursor.relayHolds(seq)
      if (through === undefined) return
      await this.commit({ put: [[keyOf.cursor(this.id), encodeCursor(through)]] })
      this.acks.stored(through)
    }, 'could not store the cursor')
  }

  /** `fromRelay`: the relay said so (false: this device's records did, a leave made offline). */
  private onDenied(reason: number, message: string, fromRelay = true): void {
    // The relay's message may name the reason already ("join refused: invite revoked").
    const text = message.includes(reasonName(reason)) ? message : `${reasonName(reason)}: ${message}`
    if (reason === Reason.UnknownRoom || TRANSIENT_DENIALS.has(reason)) {
      if (reason === Reason.UnknownRoom) {
        // The conversation exists on its creator's device but has not reached the relay yet
        // (created offline, or its first upload is still on the way): not a refusal. join()
        // need not wait.
        this.settleSyncWaiters()
      } else {
        // The relay cannot take the conversation now (too many open on this connection, full,
        // its own trouble), not for good: a join waiting hears why, and nothing pending fails.
        const err = new PetrelError(ErrorCode.Refused, `relay refused the conversation for now: ${text}`, { conversationId: this.id })
        // A join waiting hears it as its rejection; the app is not told twice.
        const told = this.syncWaiters.size > 0 || this.joinPending
        for (const waiter of this.syncWaiters) waiter(err)
        this.syncWaiters.clear()
        if (this.reopenRetries === 0 && !told) this.ctx.reportError(err)
      }
      // Ask again later, backing off, and keep everything pending meanwhile.
      this.reopenRetries++
      clearTimeout(this.reopenTimer)
      this.reopenTimer = setTimeout(
        () => {
          if (!this.closed) this.provider?.connect()
        },
        Math.min(30_000, 500 * 2 ** Math.min(this.reopenRetries, 6)) * (0.5 + Math.random() / 2),
      )
      return
    }
    const invite = reason === Reason.InviteExpired || reason === Reason.InviteUsedUp || reason === Reason.InviteRevoked || reason === Reason.BadAdmission
    // This person left (on this device or another): what they asked for, not an error to report.
    const left = reason === Reason.NotMember && this.selfLeft()
    const err = left
      ? new PetrelError(ErrorCode.Refused, 'you left this conversation', { conversationId: this.id })
      : new PetrelError(invite ? ErrorCode.InviteInvalid : ErrorCode.Refused, `relay refused the conversation: ${text}`, { conversationId: this.id })
    this.denied = err
    this.deniedAsLeft = left
    if (fromRelay) this.refusedByRelay = true
    // A join waiting hears it as its rejection: the app is not told twice (an app toasting both
    // showed a used-up invite twice).
    const told = this.syncWaiters.size > 0 || this.joinPending
    for (const waiter of this.syncWaiters) waiter(err)
    this.syncWaiters.clear()
    // Not a member (any more): nothing pending can ever be delivered, nor sealed (what waited
    // for a due rotation would wait for good).
    const puts: Array<[string, Uint8Array | null]> = []
    // Except our own leave folded here before the relay denied anything: what this device sealed
    // before it stands ahead of the leave in its outer log and goes up with it, and the relay
    // takes it (it showed failed here and arrived everywhere else). The relay's denial, if it
    // comes (the leave was another device's), fails whatever it did not take.
    if (fromRelay || !left) this.own.failPending(left ? err.message : text, puts)
    this.seals.failQueued(err)
    if (!left && !told) this.ctx.reportError(err)
    if (puts.length > 0) {
      this.statusesChanged()
      void this.commit({ put: puts }).catch((e) => this.report(e, 'could not store failures'))
    }
    // `refusal` changed: an app showed "you were removed" only at its next render for another cause.
    this.notify()
  }

  // ---------------------------------------------------------------- reading

  /**
   * Every message, oldest first, in the same order on every device. The list and its objects
   * are read-only; a message that has not changed since the last call is the same object.
   *
   * @example
   * ```ts
   * for (const m of conv.messages()) console.log(m.authorName, m.text, m.status)
   * ```
   */
  messages(): Message[] {
    if (this.summary) return this.summary.messages
    return this.shown.messages()
  }

  /**
   * The newest `count` messages, oldest first, as `messages().slice(-count)` — without building
   * the whole list: what a chat screen or a virtualized list's end needs on every change. The
   * list and its objects are read-only; a message that has not changed is the same object.
   *
   * @example
   * ```ts
   * conv.subscribe(() => render(conv.lastMessages(50)))
   * ```
   */
  lastMessages(count: number): Message[] {
    if (!Number.isSafeInteger(count) || count < 0) throw new PetrelError(ErrorCode.InvalidArgument, 'count must be a whole number ≥ 0')
    if (this.summary) return this.summary.messages.slice(Math.max(0, this.summary.messages.length - count))
    return this.shown.last(count)
  }

  /** One message by id. */
  message(id: string): Message | undefined {
    if (this.summary) return this.summary.messages.find((m) => m.id === id)
    return this.shown.message(id)
  }

  /** The list as shown (shown-list.ts), reading this conversation's state. */
  private readonly shown: ShownList

  /** Ticks of a message of this user, from its own record here or, sent from another of our devices, its row. */
  private statusOf(id: string, author: string, v: StoredMessage): { status: Message['status']; error?: string } {
    const own = this.own.get(id)
    const siblingSeq = own ? undefined : this.messageSeq.get(id)
    // Sent from another of our devices: its ticks are the same facts about the same row.
    if (siblingSeq !== undefined) return TICKS[this.receiptBook.status(this.membership, author, v.at, siblingSeq, this.ctx.readReceipts)]
    if (!own) return TICKS.sent
    if (own.failure) return { status: 'failed', error: own.failure }
    if (own.seq === 0) return TICKS.pending
    return TICKS[this.receiptBook.status(this.membership, author, v.at, own.seq, this.ctx.readReceipts)]
  }

  /** Be told of any change of messages or statuses; returns unsubscribe. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener)
    return () => {
      this.listeners.delete(listener)
    }
  }

  /**
   * Something shown changed (see ShownList.changed): listeners hear of it. `keys`: only these
   * message entries were written.
   */
  private changed(keys?: Iterable<string>): void {
    this.shown.changed(keys)
    this.notify()
  }

  /** Only the statuses of this user's messages changed (acks, receipts, failures, reads): all, or those of `ids`. */
  private statusesChanged(ids?: Iterable<string>): void {
    this.shown.statusesChanged(ids)
    this.notify()
  }

  /** What of the membership ticks depend on, as of the last fold (see foldRecords). */
  private ticksShape = ''
  /** This user's messages by the position that stored them (position-index.ts). */
  private readonly ownBySeq = new PositionIndex()

  /** Tell listeners (once per microtask) and the summary keeper that something shown changed. */
  private notify(): void {
    if (!this.summary && !this.closed && this.provider) this.ctx.summaryDirty?.(this)
    if (this.notifyScheduled) return
    this.notifyScheduled = true
    queueMicrotask(() => {
      this.notifyScheduled = false
      for (const l of [...this.listeners]) {
        try {
          l()
        } catch (err) {
          queueMicrotask(() => {
            throw err
          })
        }
      }
    })
  }

  // ---------------------------------------------------------------- failed messages

  /**
   * Send a failed message again. One the relay refused for good goes as a new message with the
   * same text (a new id, at the end of the list): its receivers hold a tombstone of the old one.
   * One that failed because the relay denied the conversation has its original change re-sealed
   * in a fresh envelope (receivers de-duplicate it), and the conversation reconnects.
   *
   * @example
   * ```ts
   * for (const m of conv.messages()) if (m.status === 'failed') await conv.retry(m.id)
   * ```
   */
  retry(id: string): Promise<void> {
    return this.accepted(() => this.retryNow(id))
  }

  private async retryNow(id: string): Promise<void> {
    await this.ready()
    const state = this.own.get(id)
    if (!state) throw new PetrelError(ErrorCode.NotFound, `no message ${id} of mine`, { conversationId: this.id })
    if (!state.failure) throw new PetrelError(ErrorCode.InvalidArgument, `message ${id} has not failed`, { conversationId: this.id })
    // Left: nothing can go (sealed again, it waited for good for a key change).
    if (this.denied && this.selfLeft()) throw this.denied
    if (state.refused || state.failure.startsWith('too large') || state.failure.startsWith('quota exceeded')) {
      // Refused for good: receivers hold a tombstone of the same change (the same Yjs items,
      // deleted), so sealing that change again would show nothing there while the ticks here
      // moved on. Send it anew. (Rows of earlier versions lack `refused`: their text tells.)
      // The new one first: a send refused now (the relay's limit lowered since, a full disk)
      // leaves the failed message where it was, to retry or discard, instead of losing its text.
      const text = this.message(id)?.text ?? ''
      this.sendableBytes(text)
      await this.sendNow(text)
      await this.discardNow(id)
      return
    }
    const update = this.originalUpdate(state.envelopeKey)
    if (!update) throw new PetrelError(ErrorCode.NotFound, `the envelope of ${id} is gone`, { conversationId: this.id })
    // The envelope may carry other failed messages sent with this one: they go again with it.
    const ids = this.own.failedWith(id)
    for (const m of ids) {
      this.own.get(m)!.failure = ''
      this.own.get(m)!.refused = false
    }
    this.denied = undefined
    this.statusesChanged(ids)
    await this.queueSeal(update, ids)
    if (this.provider && !this.provider.shouldConnect) this.provider.connect()
  }

  /** The inner update inside one of our own envelopes. */
  private originalUpdate(envelopeKey: string): Uint8Array | undefined {
    const sealed = this.outer.getMap<Uint8Array>(OUTER_LOG).get(envelopeKey)
    if (!(sealed instanceof Uint8Array)) return undefined
    const header = readEnvelope(sealed)
    const current = this.record.keys.get(header.epoch)
    const key =
      current && constantTimeEqual(keyCheckOf(current), header.keyCheck) ? current : this.lostKeys.get(toBase64Url(header.keyCheck))
    return key ? decryptEnvelope(this.id, header, key) : undefined
  }

  /** Drop a failed message from this device. */
  discard(id: string): Promise<void> {
    return this.accepted(() => this.discardNow(id))
  }

  private async discardNow(id: string): Promise<void> {
    await this.ready()
    const state = this.own.get(id)
    if (!state) throw new PetrelError(ErrorCode.NotFound, `no message ${id} of mine`, { conversationId: this.id })
    if (!state.failure) throw new PetrelError(ErrorCode.InvalidArgument, `message ${id} has not failed`, { conversationId: this.id })
    this.own.delete(id)
    const messages = this.doc.getMap<StoredMessage>(INNER_MESSAGES)
    const nonce = messages.get(id)?.b
    await this.writeInner(() => {
      messages.delete(id)
      // Its batch's entry keeps its hash, enough to test guesses at a short text: once no
      // message names the entry, it goes too. (A refused batch never left this device.)
      if (nonce === undefined) return
      for (const [key, v] of messages) if (v?.b === nonce && key.startsWith(`${this.ctx.identity.userId}.`)) return
      this.doc.getMap(INNER_MESSAGE_BATCHES).delete(`${this.ctx.identity.userId}.${nonce}`)
    })
    // Its format-1 row too, should the start's tidy have failed (a full disk) and left it.
    const puts: Array<[string, Uint8Array | null]> = [[keyOf.own(this.id, id), null]]
    this.own.rowPuts(state.envelopeKey, puts)
    await this.commit({ put: puts })
    this.changed()
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * Resolves when the first sync with the relay completed; rejects if the relay refused us.
   *
   * @internal The client's and the engine's own; not part of the app API.
   */
  async whenSynced(timeoutMs: number): Promise<void> {
    await this.ready()
    return this.waitSynced(timeoutMs)
  }

  private waitSynced(timeoutMs: number): Promise<void> {
    // Synced already (the sync came while the caller was busy): the rows it brought may still be
    // being applied. As settleSyncWaiters does, resolve once they are in the inner doc.
    if (this.provider?.synced) return this.incomingTail.then(() => undefined)
    if (this.denied) return Promise.reject(this.denied)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.syncWaiters.delete(waiter)
        resolve()
      }, timeoutMs)
      const waiter = (err?: PetrelError) => {
        clearTimeout(timer)
        if (err) reject(err)
        else resolve()
      }
      this.syncWaiters.add(waiter)
    })
  }

  private settleSyncWaiters(): void {
    // The relay sends the catch-up rows before its sync step 2, and they are verified, decrypted
    // and applied asynchronously: settle once they are in the inner doc, so a resolved join()
    // shows the title and the history.
    const waiters = [...this.syncWaiters]
    this.syncWaiters.clear()
    void this.incomingTail.then(() => {
      for (const w of waiters) w()
    })
  }

  /**
   * The relay has admitted this device to the conversation and its catch-up is applied (false
   * offline, while connecting, and after a join that resolved before the relay answered).
   *
   * @example
   * ```ts
   * status.textContent = conv.synced ? '' : 'Waiting for network…'
   * ```
   */
  get synced(): boolean {
    return this.provider?.synced ?? false
  }

  /**
   * Highest relay sequence number this device durably holds.
   *
   * @internal The client's and the engine's own; not part of the app API.
   */
  get storedCursor(): number {
    return this.acks.storedSeq
  }

  /**
   * Member userIds, from verified records (apps read `members()`).
   *
   * @internal The client's and the engine's own; not part of the app API.
   */
  memberIds(): string[] {
    return [...this.membership.members.keys()]
  }

  /**
   * This device's person is an admin here (may invite, add, remove and promote).
   *
   * @example
   * ```ts
   * inviteButton.hidden = !conv.isAdmin()
   * ```
   */
  isAdmin(): boolean {
    return this.membership.members.get(this.ctx.identity.userId)?.role === 'admin'
  }

  /**
   * Keys of every epoch this device holds (for invites).
   *
   * @internal The client's and the engine's own; not part of the app API.
   */
  keys(): Map<number, Uint8Array> {
    return new Map(this.record.keys)
  }

  /**
   * Close this conversation on this device. The client does it for every conversation as it
   * closes; an app that calls it itself stops this conversation until the client is started
   * again. Every call resolves once what was accepted before is stored.
   *
   * @internal Apps close the client (`client.close()`).
   */
  close(): Promise<void> {
    this.closing ??= this.closeNow()
    return this.closing
  }

  /** The close under way: a second call waits for it rather than resolving before it is done. */
  private closing: Promise<void> | undefined

  private async closeNow(): Promise<void> {
    this.closed = true
    // A join waiting for its first sync hears of it now: its 15-s timer kept a process alive.
    const err = new PetrelError(ErrorCode.Closed, 'conversation is closed', { conversationId: this.id })
    for (const waiter of this.syncWaiters) waiter(err)
    this.syncWaiters.clear()
    this.acks.stop()
    this.lostFill.stop()
    // No snapshot is tried again from here on; one whose envelopes are written is stored below.
    const snapshotsStored = this.snapshots.close()
    this.reseal.stop()
    this.fills.close()
    // Never loaded: nothing was opened, nothing to flush.
    if (!this.loading) return
    await this.loading.catch(() => undefined)
    // Sends still waiting for a first key give up: they fail (nothing of them was stored yet).
    for (const wake of this.keyWaiters.splice(0)) wake()
    clearTimeout(this.dueRotationTimer)
    clearTimeout(this.welcomeTimer)
    for (const wake of this.rotationWaiters.splice(0)) wake()
    clearTimeout(this.reopenTimer)
    // What the app asked for before closing (a send still waiting for the load, say) is written
    // before the store closes.
    await Promise.allSettled([...this.inFlight])
    if (!this.provider) {
      // Closed while it loaded: never connected, but what was accepted meanwhile is stored.
      await this.sends.drained()
      await this.outgoing
      await this.seals.stored()
      return
    }
    // An acknowledgement still waiting goes out now: closing must not hold back ✓✓.
    await this.incomingSettled()
    this.acks.sendNow()
    this.presence?.destroy()
    const provider = this.provider
    provider.destroy()
    this.ctx.connection.unregister(this.id)
    // A snapshot whose envelopes are written is stored too (one still sealing gives up).
    await snapshotsStored
    // Sends accepted before closing are signed, written and stored before the store closes;
    // a batch may queue the next one, so wait until the chain stops growing.
    await this.sends.drained()
    await this.outgoing
    await this.seals.stored()
    // Receipts and cursors waiting for their timer are stored now, not lost with the session.
    this.bookkeeping.flush()
    await this.incomingSettled()
    await this.compactOnClose()
    // Issued after every write from the ids, with the summary where there is one: with a
    // commit of its own at each close (1,000 more transactions), the next `open: 'all'` of
    // 1,000 conversations took 603–710 ms against 506–653 (benchmark 6, four runs each).
    const writer = this.writerIds.entry(provider.awareness, this.localWriteFailed)
    this.source.drop()
    // Last, after every queued write: then it matches what is stored.
    const saved = this.ctx.summaryDirty && (await this.saveSummary(true, writer ? [writer] : []))
    if (writer && !saved) {
      // Only the reuse is lost if it fails: the next session takes fresh ids.
      await this.ctx.store.commit({ put: [writer] }).catch((err) => this.report(err, 'could not store the client ids for the next session'))
    }
    this.listeners.clear()
    this.innerDoc?.destroy()
    this.outerDoc?.destroy()
  }

  /**
   * Every write of this conversation goes through here: the first one after a summary was
   * stored also marks it stale (in the same atomic batch), so a start after a crash never
   * shows an old summary as if it were current — it loads the documents instead.
   */
  private commit(batch: Batch, options?: CommitOptions): Promise<void> {
    if (this.source.feeding && batch.append) {
      const inner: Uint8Array[] = []
      for (const a of batch.append) if (a.doc === 'inner') inner.push(a.bytes)
      this.source.take(inner)
    }
    if (!this.summaryStale) {
      this.summaryStale = true
      batch.put = [...(batch.put ?? []), [staleSummaryKey(this.id), STALE]]
    }
    const stored = this.ctx.store.commit(batch, options)
    if (!batch.append) return stored
    // Whatever appended it (a send, a record, a snapshot part, received rows), the documents now
    // hold something the disk does not: compactOnClose and the writer ids' entry must know.
    return stored.catch((err: unknown) => {
      this.localWriteFailed = true
      throw err
    })
  }

  /**
   * Store what a lazy start shows before this conversation is loaded (summary.ts).
   *
   * @internal The client's and the engine's own; not part of the app API.
   */
  async saveSummary(final = false, also: Array<[string, Uint8Array]> = []): Promise<boolean> {
    if (this.summary || !this.provider || (this.closed && !final)) return false
    try {
      // Computed and issued in one turn: a write that changes what it shows is issued after
      // it (commits land in order) and marks it stale again.
      this.summaryStale = false
      const summary = encodeSummary({ title: this.title, unread: this.unreadCount(), messages: this.messages().slice(-SUMMARY_MESSAGES) })
      await this.ctx.store.commit({ put: [[summaryKey(this.id), summary], [staleSummaryKey(this.id), null], ...also] })
      return true
    } catch (err) {
      // Only a faster start is lost; the documents are the truth.
      // The final one is reported too: without it the next lazy start loads the documents.
      if (!this.closed || final) this.report(err, 'could not store the conversation summary')
      return false
    }
  }

  /**
   * After a session that appended many log rows, leave one row per document behind so the next
   * open reads one row, not thousands. Only when every queue is flushed and no local write
   * failed: then the documents hold exactly what is durable (a failed send's update is in the
   * doc but not on disk, and must not reach it without its outbox entry).
   */
  private async compactOnClose(): Promise<void> {
    if (this.appendedRows <= COMPACT_AFTER_ROWS || this.localWriteFailed) return
    const merged = (doc: Y.Doc, name: 'inner' | 'outer') => ({ convId: this.id, doc: name, throughId: Number.MAX_SAFE_INTEGER, merged: encodeState(doc) })
    try {
      await this.ctx.store.commit({ compact: [merged(this.doc, 'inner'), merged(this.outer, 'outer')] })
    } catch (err) {
      // Nothing lost: the rows stay as they were and the next open compacts them.
      this.report(err, 'could not compact the local log')
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new PetrelError(ErrorCode.Closed, 'conversation is closed', { conversationId: this.id })
  }


  /** A message on this room's socket was refused and dropped (room-provider.ts). */
  private malformedFromRelay(err: unknown): void {
    this.ctx.reportError(
      err instanceof PetrelError
        ? err
        : new PetrelError(ErrorCode.Malformed, `relay sent a malformed message: ${(err as Error)?.message ?? String(err)}`, { cause: err, conversationId: this.id }),
    )
  }

  private report(err: unknown, context: string): void {
    this.ctx.reportError(
      err instanceof PetrelError ? err : new PetrelError(ErrorCode.StorageFailed, `${context}: ${(err as Error).message}`, { cause: err, conversationId: this.id }),
    )
  }
}

/**
 * A document guid that is only ever local (our documents are not subdocuments, and the guid
 * never leaves the device): Yjs's default draws a random UUID through WebCrypto per document,
 * 0.07 ms each — 14% of opening 1,000 conversations.
 */
let guids = 0


/** Members, since when, and their devices: all that ticks read of a membership (receipts.ts). */
function ticksShape(m: MembershipState): string {
  let out = ''
  for (const [userId, member] of m.members) {
    out += `${userId}:${member.joinedAt}`
    for (const device of member.devices.keys()) out += `,${device}`
    out += ';'
  }
  return out
}


const localGuid = (): string => `petrel-${++guids}`

