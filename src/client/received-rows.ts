/**
 * What a conversation does with the rows the relay sends it: the receive chain.
 *
 * Rows are checked for their narrow outer shape and applied to the outer log at once (the
 * relay is untrusted: outer-rows.ts); the envelopes they carry are queued in relay order and
 * taken in by passes, one after another. A pass folds the records that came with them first,
 * then opens each envelope that the admission rules let through (envelope-admission.ts), checks
 * what its inner update may change (inner-guard.ts) and applies everything in one inner
 * transaction; the outer rows and the inner updates are then committed together, so a crash
 * never leaves one without the other, and only once they are stored does this device tell the
 * members it holds them (✓✓, device-acks.ts).
 *
 * While passes lag behind (a catch-up arrives faster than it is applied), pages without records
 * join the pass already queued: one transaction and one commit for several. Snapshots of
 * history this device lacks are gathered here part by part and applied inside a pass
 * (snapshot-assembly.ts, missing-history.ts); what arrives after a compaction waits for them.
 *
 * Everything else that must run after the rows received so far queues on the same chain
 * (`after`), and commits it need not wait for still count for `settled` (`landing`).
 */
import type { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'
import { randomBytes, toHex } from '../shared/crypto/index.js'
import { readEnvelope, type SnapshotPart } from '../shared/envelope.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import type { MembershipState } from '../shared/membership.js'
import { OUTER_LOG, OUTER_RECORDS } from '../shared/outer-keys.js'
import { applyUpdate } from '../shared/update-reader.js'
import { encodeBindings, encodeCursor, encodeMessageSeqs, keyOf } from './conversation-record.js'
import type { DeviceAcks } from './device-acks.js'
import { type AdmissionRules, admitEnvelope, type CheckedEnvelopes, checkEnvelopes, type IncomingEnvelope, lowestEpoch, nonceKey } from './envelope-admission.js'
import { type HeldEnvelopes, MAX_HELD_FOR_SNAPSHOT } from './held-envelopes.js'
import { checkInnerUpdate, INNER_MESSAGES } from './inner-guard.js'
import type { LostHistoryFill } from './lost-history-fill.js'
import type { MembershipBook } from './membership-book.js'
import { isClock } from './message-id.js'
import type { MissingHistory } from './missing-history.js'
import { ORIGIN_REMOTE } from './origins.js'
import { applyRows, checkRows, RowLocator, type RowsMessage } from './outer-rows.js'
import type { PositionIndex } from './position-index.js'
import { rowsToStore, transactWithoutUpdate } from './quiet-transact.js'
import type { RowCursor } from './row-cursor.js'
import type { StoredMessage } from './shown-list.js'
import type { SnapshotAssembly } from './snapshot-assembly.js'
import type { SnapshotChecks } from './snapshot-checks.js'
import { checkSnapshotState } from './snapshot-state.js'
import { type Batch, COMMIT_SOON, type CommitOptions } from './storage/device-store.js'
import type { SessionWriterIds } from './writer-ids.js'

/** Envelope bytes one pass over received pages takes at most (it blocks the thread while it runs). */
const MERGE_PAGES_BYTES = 1024 * 1024

/** What the receive chain reads and asks of its conversation. */
export interface ReceivedRowsHost {
  readonly id: string
  readonly userId: string
  readonly deviceId: string
  readonly inner: Y.Doc
  readonly outer: Y.Doc
  /** The room's provider once connected: the origin rows are applied with (so it does not echo them), and whether the catch-up is done. */
  readonly provider: WebsocketProvider | undefined
  /** The conversation's own update listeners, which received changes must not reach (they would be sealed again). */
  readonly innerListener: (update: Uint8Array, origin: unknown) => void
  readonly outerListener: (update: Uint8Array, origin: unknown) => void
  /** How far this device holds the relay's rows. */
  readonly rowCursor: RowCursor
  readonly book: MembershipBook
  readonly membership: MembershipState
  readonly epochKeys: ReadonlyMap<number, Uint8Array>
  /** Envelopes this device may not open yet (held-envelopes.ts). */
  readonly heldEnvelopes: HeldEnvelopes
  readonly missing: MissingHistory
  readonly assembly: SnapshotAssembly
  readonly checks: SnapshotChecks
  readonly lostFill: LostHistoryFill
  readonly writerIds: SessionWriterIds
  readonly acks: DeviceAcks
  /** Inner client id → the device that writes from it (inner-guard.ts); added to here. */
  readonly bindings: Map<number, string>
  /** Message key → the row of the envelope that brought it; added to here. */
  readonly messageSeq: Map<string, number>
  readonly ownBySeq: PositionIndex
  /** An admin is to give this device keys its invite could not carry (`devicesToWelcome`). */
  readonly awaitingWelcome: boolean
  /** A message's hybrid clock was seen: the next send's is later. */
  seeClock(h: number): void
  foldRecords(): Promise<void>
  commit(batch: Batch, options?: CommitOptions): Promise<void>
  changed(keys?: Iterable<string>): void
  statusesChanged(ids?: Iterable<string>): void
  /** The message is in the shown list. */
  listed(messageId: string): boolean
  /** Updates received under `epoch`, counted toward snapshots and the next key rotation. */
  receivedCounted(epoch: number, n: number): void
  /** A local write failed: the documents now hold what the disk does not. */
  storeFailed(): void
  appended(rows: number): void
  report(err: unknown, context: string): void
  reportError(err: PetrelError): void
}

/** One page of received rows, waiting for its pass. */
interface IncomingPage {
  envelopes: IncomingEnvelope[]
  /** The outer log rows to store for it (see rowsToStore). */
  outerRows: Uint8Array[]
  maxSeq: number
  seqsChanged: boolean
  checked: Promise<CheckedEnvelopes>
}

export class ReceivedRows {
  private incoming: Promise<void> = Promise.resolve()
  /** Commits issued from the chain that it did not wait for (see `landing`). */
  private storing: Promise<void> = Promise.resolve()
  /** The queued pass over received pages that later pages may still join. */
  private openPages: { pages: IncomingPage[]; bytes: number } | undefined
  /** Log keys received but not processed yet (processing is queued behind earlier batches). */
  private readonly queued = new Set<string>()
  /** Seqs of received rows uploaded as snapshot parts whose envelopes have not been taken yet. */
  private readonly partRows = new Set<number>()
  /**
   * Nonce → signature of every envelope this device has opened (built lazily from the log):
   * the same nonce with another signature is a sender reusing a nonce under one key, which
   * leaks the XOR of two plaintexts, so it is refused; with the same signature it is a replay.
   */
  private nonces?: Map<string, Uint8Array>
  /** Errors found while a received batch is being applied, reported once it is done. */
  private heldErrors: PetrelError[] | undefined
  /** The updates the receive transaction in progress has applied, as received. */
  private applied: { updates: Uint8Array[]; whole: boolean } | undefined

  /**
   * @example
   * ```ts
   * const received = new ReceivedRows(host)
   * provider.messageHandlers[RoomMessage.Rows] = (_e, d) => received.rows(readRows(reader(d)))
   * await received.settled()   // every page so far applied and stored
   * ```
   */
  constructor(private readonly host: ReceivedRowsHost) {}

  /** Take a `rows` message from the relay: applied to the outer log now, its envelopes queued for a pass. */
  rows(msg: RowsMessage): void {
    const { host } = this
    const outer = host.outer
    const provider = host.provider
    // Rows come from an untrusted relay: check the narrow outer shape before Yjs sees them.
    const { clients, compacted } = checkRows(msg, outer, !provider?.synced)
    for (const seq of compacted) host.missing.compactedRow(seq)
    // Origin = the provider, so y-websocket does not echo the rows back to the relay.
    const updateHandler = (provider as unknown as { _updateHandler?: unknown } | undefined)?._updateHandler
    const { recordKeys, logKeys, quiet, encoded, added } = applyRows(outer, msg.update, clients, provider, [host.outerListener, updateHandler])
    // A received row that moved our own outer id on made Yjs draw another: the resumed ids were
    // used elsewhere, and the awareness follows whatever the id is now (writer-ids.ts).
    host.writerIds.afterRows()
    // Rows still waiting for predecessors: remembered, and the cursor stops before them, so
    // this device never acknowledges (✓✓) what it does not hold yet.
    const { index, maxSeq } = host.rowCursor.indexRows(msg.index, (row) => Y.getState(outer.store, row.client) >= row.clock + row.len)
    const rec = outer.getMap<Uint8Array>(OUTER_RECORDS)
    const log = outer.getMap<Uint8Array>(OUTER_LOG)
    const records = recordKeys.map((k) => rec.get(k)).filter((v): v is Uint8Array => v instanceof Uint8Array)
    const rows = new RowLocator(index)
    let seqsChanged = false
    for (const key of recordKeys) {
      const seq = rows.seqOfKey(key)
      if (seq !== undefined && host.book.noteSeq(key, seq)) seqsChanged = true
    }
    // Rows uploaded as snapshot parts, kept until their envelopes integrate (a row may wait in Yjs).
    for (const seq of msg.parts) this.partRows.add(seq)
    const envelopes: IncomingEnvelope[] = []
    for (const key of logKeys) {
      const bytes = log.get(key)
      if (!(bytes instanceof Uint8Array)) continue
      const seq = rows.seqOfKey(key) ?? maxSeq
      envelopes.push(this.partRows.has(seq) ? { key, seq, bytes, part: true } : { key, seq, bytes })
    }
    if (this.partRows.size > 0) for (const seq of this.partRows) if (seq <= maxSeq) this.partRows.delete(seq)
    envelopes.sort((a, b) => a.seq - b.seq)
    for (const e of envelopes) this.queued.add(e.key)
    // Rows that added nothing (all held already) are not stored again; rows waiting in Yjs for
    // predecessors are, since they will not be encoded when they integrate. Yjs's encoding (the
    // fallback) holds only what integrated: with rows left waiting, the rows as received go
    // too, or a later quiet batch that integrates them would store nothing of them.
    const outerRows = quiet && !added ? [] : rowsToStore(quiet, [msg.update], encoded ? [encoded] : [], outer)
    // Signatures are checked now, off the main thread, while earlier batches are still applied.
    const checked = this.checkEnvelopes(envelopes)
    checked.catch(() => {}) // awaited in order below; a failure surfaces there
    const page: IncomingPage = { envelopes, outerRows, maxSeq, seqsChanged, checked }
    // While processing lags (a catch-up arrives faster than it is applied), record-free pages
    // join the pass already queued: one inner transaction and one durable commit for several.
    let bytes = 0
    for (const e of envelopes) bytes += e.bytes.length
    const open = this.openPages
    if (records.length === 0 && open && open.bytes + bytes <= MERGE_PAGES_BYTES) {
      open.pages.push(page)
      open.bytes += bytes
      return
    }
    const queued = { pages: [page], bytes }
    this.openPages = records.length === 0 ? queued : undefined
    const job = this.incoming.then(() => {
      if (this.openPages === queued) this.openPages = undefined
      return this.processPages(records, queued.pages)
    })
    this.incoming = job.catch((err) => {
      host.storeFailed()
      host.acks.storeFailedOnce()
      host.report(err, 'could not store received messages')
    })
  }

  /** Queue `job` on the receive chain, after what is queued there; its failure is reported with `failure`. */
  after(job: () => unknown, failure: string): void {
    this.incoming = this.tail.then(job).then(
      () => undefined,
      (err: unknown) => this.host.report(err, failure),
    )
  }

  /** The receive chain, for a job that must run after every page received so far (and before later ones). */
  get tail(): Promise<void> {
    this.openPages = undefined
    return this.incoming
  }

  /** Every queued receive job done and its batch stored. */
  async settled(): Promise<void> {
    // The jobs queued now, and the commits they issue; not those a busy stream adds meanwhile.
    await this.incoming
    await this.storing
  }

  /**
   * A commit issued from the receive chain that the chain need not wait for: `durable` runs
   * once it lands, and `settled` still waits for it.
   */
  landing(commit: Promise<void>, failure: string, durable?: () => void): void {
    const stored = commit.then(durable, (err: unknown) => this.host.report(err, failure))
    this.storing = this.storing.then(() => stored)
  }

  /** A pass over what is held only (after a membership change, a key, a snapshot). */
  pass(): Promise<void> {
    return this.processIncoming([], [], [], 0)
  }

  /** Process held envelopes again (after their snapshot, or once it is clear none comes). */
  retryHeld(): void {
    this.host.heldEnvelopes.retrySoon()
    this.after(() => this.pass(), 'could not apply held messages')
  }

  /** Keep an envelope to try again after the next membership change (bounded); reported unless `quiet`. */
  private defer(envelope: IncomingEnvelope, code: ErrorCode, message: string, quiet = false): void {
    if (!this.host.heldEnvelopes.add(envelope) || quiet) return
    this.reject(code, `${message}; held until the conversation's records explain it`)
  }

  /** Report what was refused; inside a pass, once it is done. */
  reject(code: ErrorCode, message: string): void {
    const err = new PetrelError(code, message, { conversationId: this.host.id })
    // Inside the receive transaction, an app's error handler must not run: a write it made
    // there would join our remote transaction and never be sealed. Reported right after.
    if (this.heldErrors) this.heldErrors.push(err)
    else this.host.reportError(err)
  }

  private processPages(records: Uint8Array[], pages: IncomingPage[]): Promise<void> {
    if (pages.length === 1) {
      const p = pages[0]!
      return this.processIncoming(records, p.envelopes, p.outerRows, p.maxSeq, p.seqsChanged, p.checked)
    }
    const checked = Promise.all(pages.map((p) => p.checked)).then((all) => ({
      headers: all.flatMap((c) => c.headers),
      verdicts: all.flatMap((c) => c.verdicts),
    }))
    return this.processIncoming(
      records,
      pages.flatMap((p) => p.envelopes),
      pages.flatMap((p) => p.outerRows),
      Math.max(...pages.map((p) => p.maxSeq)),
      pages.some((p) => p.seqsChanged),
      checked,
    )
  }

  private async processIncoming(
    records: Uint8Array[],
    incoming: IncomingEnvelope[],
    outerUpdates: Uint8Array[],
    maxSeq: number,
    seqsChanged = false,
    checked?: Promise<CheckedEnvelopes>,
  ): Promise<void> {
    const { host } = this
    const held = host.heldEnvelopes
    const doc = host.inner
    if (records.length > 0) await host.foldRecords()
    // Envelopes held back earlier (sender's join or the epoch key not here yet) go first.
    const retry = held.take(records.length > 0)
    const envelopes = retry.length > 0 ? [...retry, ...incoming].sort((a, b) => a.seq - b.seq) : incoming
    const heldBefore = held.size
    const { headers, verdicts } = await (retry.length === 0 && checked ? checked : this.checkEnvelopes(envelopes))
    const innerUpdates: Uint8Array[] = []
    const capture = (update: Uint8Array, origin: unknown) => {
      if (origin === ORIGIN_REMOTE) innerUpdates.push(update)
    }
    let bindingsChanged = false
    const seqEntries: Array<[string, number]> = []
    let currentSeq = 0
    let receivedUpdates = 0
    // Message key → row of the envelope that wrote it: a message's place in relay order.
    const keySeq = new Map<string, number>()
    const messages = doc.getMap<StoredMessage>(INNER_MESSAGES)
    const messageSeq = host.messageSeq
    const minePrefix = `${host.userId}.`
    const noteSeq = (event: Y.YMapEvent<StoredMessage>) => {
      for (const key of event.keysChanged) {
        // One lookup where the entry holds a value; `undefined` may be a deleted entry.
        const v = messages.get(key) as StoredMessage | null | undefined
        if (v === undefined && !messages.has(key)) continue
        const h = v?.h
        if (isClock(h)) host.seeClock(h)
        if (messageSeq.has(key)) continue
        // An entry that waited in Yjs for an earlier update takes the row that completed it.
        const seq = keySeq.get(key) ?? currentSeq
        messageSeq.set(key, seq)
        seqEntries.push([key, seq])
        // Sent by another of this user's devices: its ticks are this user's too.
        if (key.startsWith(minePrefix)) host.ownBySeq.add(seq, key)
      }
    }
    messages.observe(noteSeq)
    doc.on('update', capture)
    // What this batch applied, as received: stored as it is, so Yjs need not encode the
    // transaction's update again — unless an apply failed part-way, when only Yjs knows what
    // went in.
    const applied = { updates: [] as Uint8Array[], whole: true }
    this.applied = applied
    let quiet = false
    try {
      // One transaction for the whole batch: observers run once. Each update is still checked
      // against the document as it stands after the ones before it (Yjs integrates immediately).
      this.heldErrors = []
      quiet = transactWithoutUpdate(doc, ORIGIN_REMOTE, new Set([host.innerListener, capture]), () => applied.whole, () => {
        // Its record may come a page after its last part, or it was inflated since.
        const readyAt = this.applyReadySnapshot(messages, keySeq)
        if (readyAt !== undefined) currentSeq = readyAt
        const rules = this.admissionRules(envelopes)
        const deviceOwner = (device: string) => host.membership.everDevices.get(device)
        for (let i = 0; i < envelopes.length; i++) {
          const admitted = admitEnvelope(rules, envelopes[i]!, headers[i], verdicts[i])
          if (admitted.kind === 'hold') this.defer(envelopes[i]!, admitted.code, admitted.message, admitted.quiet)
          else if (admitted.kind === 'refuse') this.reject(admitted.code, admitted.message)
          if (admitted.kind !== 'open') continue
          const { opened, deviceId, userId } = admitted
          if (opened.kind === 'update' && this.holdForSnapshot(envelopes[i]!)) continue
          this.openedNonces(envelopes).set(admitted.nonce, admitted.signature)
          if (opened.kind === 'snapshot') {
            this.gatherSnapshot(opened, admitted.epoch, deviceId, envelopes[i]!.seq)
            const at = this.applyReadySnapshot(messages, keySeq)
            if (at !== undefined) currentSeq = at
            continue
          }
          const update = opened.update
          let verdict = checkInnerUpdate(doc, update, { deviceId, userId }, host.bindings, deviceOwner)
          // Signed by this device, from the inner id it writes from now: the id was used elsewhere.
          if (!verdict.ok && verdict.ownClient && host.writerIds.resuming && deviceId === host.deviceId) {
            host.writerIds.abandon()
            verdict = checkInnerUpdate(doc, update, { deviceId, userId }, host.bindings, deviceOwner)
          }
          if (!verdict.ok) {
            this.reject(ErrorCode.AuthorshipViolation, `update from ${userId.slice(0, 8)}… refused: ${verdict.reason}`)
            continue
          }
          currentSeq = envelopes[i]!.seq
          if (admitted.epoch === host.membership.epoch) receivedUpdates += Math.max(1, verdict.messageKeys.length)
          for (const k of verdict.messageKeys) if (!keySeq.has(k)) keySeq.set(k, currentSeq)
          for (const client of verdict.bind) host.bindings.set(client, deviceId)
          if (verdict.bind.length > 0) bindingsChanged = true
          try {
            applyUpdate(doc, update, ORIGIN_REMOTE)
            applied.updates.push(update)
          } catch (err) {
            applied.whole = false
            this.reject(ErrorCode.Malformed, `inner update failed to apply: ${(err as Error).message}`)
          }
        }
        // Changes that continue a client whose start this device can never read: they go in now
        // (only on the pass lost-history-fill.ts queues, once they have waited a while).
        let fillers: Uint8Array[] = []
        try {
          fillers = host.lostFill.fillers()
        } catch (err) {
          host.report(err, 'could not fill history this device cannot read')
        }
        // What completes takes the row that completed it, as any entry that waited in Yjs.
        if (fillers.length > 0 && currentSeq === 0) currentSeq = host.rowCursor.through
        for (const filler of fillers) {
          applyUpdate(doc, filler, ORIGIN_REMOTE)
          applied.updates.push(filler)
        }
      })
    } finally {
      this.applied = undefined
      doc.off('update', capture)
      messages.unobserve(noteSeq)
      for (const e of incoming) this.queued.delete(e.key)
      const heldErrors = this.heldErrors ?? []
      this.heldErrors = undefined
      for (const err of heldErrors) host.reportError(err)
    }
    if (doc.store.pendingStructs !== null) host.lostFill.soon()
    const id = host.id
    const batch: Batch = {
      append: [
        ...outerUpdates.map((bytes) => ({ convId: id, doc: 'outer' as const, bytes })),
        ...rowsToStore(quiet, applied.updates, innerUpdates, doc).map((bytes) => ({ convId: id, doc: 'inner' as const, bytes })),
      ],
      put: seqEntries.length > 0 ? [[keyOf.messageSeqs(id, batchTag()), encodeMessageSeqs(seqEntries)]] : [],
    }
    if (bindingsChanged) batch.put!.push([keyOf.bindings(id), encodeBindings(host.bindings)])
    if (seqsChanged) batch.put!.push([keyOf.recordSeqs(id), host.book.encodeSeqs()])
    if (held.size !== heldBefore || retry.length > 0) batch.put!.push([keyOf.deferred(id), held.encode()])
    const through = host.rowCursor.received(maxSeq)
    if (through !== undefined) batch.put!.push([keyOf.cursor(id), encodeCursor(through)])
    const checksRow = host.checks.takeRow()
    if (checksRow) batch.put!.push(checksRow)
    // A listed message from another of our devices takes its ticks from its position, which
    // this batch may have just set: its row is read again.
    const siblings = seqEntries.filter(([key]) => host.listed(key))
    if (siblings.length > 0) host.statusesChanged(siblings.map(([key]) => key))
    const committedThrough = host.rowCursor.through
    // The next batch need not wait for this one's commit (it runs on the writer thread, and
    // commits land in the order issued); what depends on it being durable waits below.
    // Soon, not now: only its ✓✓ waits for it, and a device receiving a busy conversation paid
    // a transaction (an fsync) per received batch.
    const stored = host.commit(batch, COMMIT_SOON).then(
      () => {
        host.acks.stored(committedThrough)
        // Listeners hear of the batch again now it is stored; what it showed changed in its transaction.
        host.changed([])
        // Stored durably: now, and only now, tell the members (✓✓).
        host.acks.schedule()
      },
      (err) => {
        host.storeFailed()
        host.acks.storeFailedOnce()
        host.report(err, 'could not store received messages')
      },
    )
    this.storing = this.storing.then(() => stored)
    host.appended(batch.append!.length)
    if (host.checks.waiting) void host.checks.verifySoon()
    if (held.due) this.retryHeld()
    host.receivedCounted(host.membership.epoch, receivedUpdates)
  }

  // ---------------------------------------------------------------- history snapshots

  /**
   * Collect one part of a snapshot; the whole inner state once every part is here and this
   * device needs it (missing-history.ts says when). A device that received that history as
   * envelopes ignores snapshots: a member's copy of others' messages can add nothing it lacks,
   * and must not replace what it verified itself.
   */
  private gatherSnapshot(part: SnapshotPart & { bytes: Uint8Array }, epoch: number, sender: string, seq: number): void {
    if (this.host.missing.wants(part.coversSeq)) this.host.assembly.add(part, epoch, sender, seq)
  }

  /**
   * Apply the gathered snapshot once its record is folded: only the snapshot the relay
   * compacted for (the latest record's), from a device of the member who signed that record.
   * A compressed one (snapshot-seal.ts, version 2) is inflated at once where the platform can
   * (Node); elsewhere off this path first, and the pass that inflating queues applies it.
   * Returns the seq of the part that completed the snapshot applied, if one was. `keySeq` is the
   * pass's message key → row (see processIncoming).
   */
  private applyReadySnapshot(messages: Y.Map<StoredMessage>, keySeq: Map<string, number>): number | undefined {
    const { host } = this
    const ready = host.assembly.take(host.membership, host.epochKeys, () => host.awaitingWelcome)
    return ready && this.applySnapshot(ready.state, messages, ready.coversSeq, ready.seq, keySeq)
  }

  /**
   * Apply a snapshot's inner state (inside the batch's transaction). Its messages are held
   * back until their authors' signatures verify; nothing of it bypasses that check. What was
   * held for it goes next, on top of it. Returns `seq` (its last part's row) once applied.
   */
  private applySnapshot(state: Uint8Array, messages: Y.Map<StoredMessage>, coversSeq: number, seq: number, keySeq: Map<string, number>): number | undefined {
    const { host } = this
    if (host.heldEnvelopes.size > 0) host.heldEnvelopes.retrySoon()
    const before = new Map<string, StoredMessage>()
    for (const [k, v] of messages) before.set(k, v)
    try {
      const checked = checkSnapshotState(state)
      if (checked.clipped > 0) {
        this.reject(ErrorCode.EnvelopeRejected, `history snapshot deleted ${checked.clipped} ranges of changes it does not hold: left out`)
        state = checked.state
      }
    } catch (err) {
      this.reject(ErrorCode.Malformed, `snapshot failed to apply: ${(err as Error).message}`)
      return
    }
    try {
      applyUpdate(host.inner, state, ORIGIN_REMOTE)
      this.applied?.updates.push(state)
    } catch (err) {
      if (this.applied) this.applied.whole = false
      this.reject(ErrorCode.Malformed, `snapshot failed to apply: ${(err as Error).message}`)
      return
    }
    host.missing.snapshotApplied(coversSeq)
    for (const [k, v] of messages) {
      if (before.get(k) === v) continue
      host.checks.hold(k)
      // Its place in relay order is at most what the snapshot covers: the row that completed
      // the snapshot came later, and read receipts below it showed a message read on the
      // writer's device as only delivered on a device that got it from the snapshot.
      if (!keySeq.has(k)) keySeq.set(k, coversSeq)
    }
    return seq
  }

  /**
   * While history reached us compacted and its snapshot has not been applied, updates after
   * it are held (durably, with the deferred ones): applied before the snapshot they would
   * wait in Yjs as pending, and Yjs re-merges its pending set on every apply (quadratic:
   * half a second of a fresh device's open of 10k messages).
   */
  private holdForSnapshot(envelope: IncomingEnvelope): boolean {
    const held = this.host.heldEnvelopes
    const verdict = this.host.missing.holdUpdate(held.size >= MAX_HELD_FOR_SNAPSHOT)
    // Too much to hold: apply as it comes after all (slower in Yjs, nothing lost); the
    // snapshot is still wanted when it comes.
    if (verdict === 'overflow') held.retrySoon()
    if (verdict !== 'hold') return false
    held.addForSnapshot(envelope)
    return true
  }

  // ---------------------------------------------------------------- admission

  /** Parse envelope headers and verify their signatures (natively, as one batch). */
  private checkEnvelopes(envelopes: ReadonlyArray<{ bytes: Uint8Array }>): Promise<CheckedEnvelopes> {
    return checkEnvelopes(this.host.id, envelopes, (err) => this.host.report(err, 'malformed envelope'))
  }

  /** What envelope-admission.ts reads of this conversation, for a pass over `pending`. */
  private admissionRules(pending: ReadonlyArray<{ key: string }>): AdmissionRules {
    const { host } = this
    let awaiting: boolean | undefined
    let first: number | undefined
    return {
      room: host.id,
      get everDevices() {
        return host.membership.everDevices
      },
      get keys() {
        return host.epochKeys
      },
      // Once a pass: a 'full' joiner catching up asks for every envelope it lacks a key for.
      get awaitingWelcome() {
        awaiting ??= host.awaitingWelcome
        return awaiting
      },
      get firstKeyEpoch() {
        first ??= lowestEpoch(host.epochKeys)
        return first
      },
      winnerKeyCheck: (epoch) => host.membership.epochs.get(epoch)?.keyCheck,
      sealedInTime: (epoch, seq) => host.book.sealedInTime(epoch, seq),
      nonces: () => this.openedNonces(pending),
    }
  }

  /** The nonce map, built on first use from the envelopes already opened (not `pending` or deferred ones). */
  private openedNonces(pending: ReadonlyArray<{ key: string }>): Map<string, Uint8Array> {
    if (this.nonces) return this.nonces
    const skip = new Set([...pending, ...this.host.heldEnvelopes.all].map((e) => e.key).concat([...this.queued]))
    const nonces = new Map<string, Uint8Array>()
    for (const [key, bytes] of this.host.outer.getMap<Uint8Array>(OUTER_LOG)) {
      if (skip.has(key) || !(bytes instanceof Uint8Array)) continue
      try {
        const h = readEnvelope(bytes)
        nonces.set(nonceKey(h.nonce), h.signature)
      } catch {
        // A malformed stored envelope was never opened; nothing to remember.
      }
    }
    this.nonces = nonces
    return nonces
  }
}

let batchTags = 0
/** A key suffix no other batch of this device has: time, a counter, and a random part (clocks go back). */
export const batchTag = (): string =>
  `${Date.now().toString(36).padStart(9, '0')}.${(++batchTags).toString(36)}.${toHex(randomBytes(4))}`
