/**
 * When and how this device writes a history snapshot of a conversation (PROTOCOL §11): it
 * counts the updates since the last snapshot, decides when one is due (snapshot-schedule.ts,
 * and whether the other member devices hold enough of the history for the relay to compact),
 * encodes the inner document (snapshot-source.ts), seals it in parts and writes them, the
 * record with the last part, into the outer log through the conversation's send queue.
 *
 * The conversation it writes for is reached only through {@link SnapshotHost}: the writer owns
 * the schedule and its counters; the documents, the keys, the queue and the store stay the
 * conversation's.
 */
import * as Y from 'yjs'
import { randomBytes, toBase64Url } from '../shared/crypto/index.js'
import { sealEnvelope } from '../shared/envelope.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import type { MembershipState } from '../shared/membership.js'
import { envelopeKey } from '../shared/outer-keys.js'
import { encodeSnapshotBody, RecordKind } from '../shared/records.js'
import { historyKeys, sealSnapshot } from '../shared/snapshot-seal.js'

/** The smallest snapshot part: a relay whose envelopes cannot hold this much (plus sealing) takes no snapshots. */
const MIN_PART_BYTES = 1024
import type { ClientContext } from './client-context.js'
import { SnapshotSchedule } from './snapshot-schedule.js'
import type { SnapshotSource } from './snapshot-source.js'

/** A snapshot given up is tried again this long after the schedule allows it (see retry). */
const RETRY_MARGIN_MS = 100

/** What the writer reads and asks of its conversation. */
export interface SnapshotHost {
  readonly id: string
  readonly ctx: ClientContext
  readonly inner: Y.Doc
  readonly outer: Y.Doc
  readonly closed: boolean
  readonly membership: MembershipState
  /** The current epoch, and the keys this device holds by epoch. */
  readonly epoch: number
  readonly epochKeys: ReadonlyMap<number, Uint8Array>
  /** The highest relay row received. */
  readonly cursor: number
  /** The highest row before which nothing received is still held back: what a snapshot may cover. */
  readonly coverableThrough: number
  /** The highest row `device` said it stored (its receipts). */
  storedBy(device: string): number
  /** Settles once everything received so far is applied. */
  incomingSettled(): Promise<void>
  /** The send queue's tail: settles once what was queued before is sealed and sent. */
  readonly outgoing: Promise<void>
  /** Run `job` in the send queue, after what was queued before. */
  afterOutgoing<T>(job: () => T): Promise<T>
  /** Write to the outer log locally; returns the outer updates it made (sent through the provider). */
  writeOuter(fn: (log: Y.Map<Uint8Array>, records: Y.Map<Uint8Array>) => void): Uint8Array[]
  /** Store outer updates durably. */
  storeOuter(updates: Uint8Array[]): Promise<void>
  /** Settles once the session's writer ids may be written from (writer-ids.ts). */
  idsTaken(): Promise<void>
  foldRecords(): Promise<void>
  /** Tombstones of our refused messages: a snapshot carries them in their place. */
  refusedTombstones(): Uint8Array[]
  /** Settles once the conversation is loaded. */
  ready(): Promise<void>
  assertOpen(): void
  report(err: unknown, context: string): void
}

export class SnapshotWriter {
  /** While a snapshot part's outer transaction runs (its update goes up as a snapshot part). */
  readonly writingPart = { now: false }
  private readonly schedule: SnapshotSchedule
  /** Updates seen since the last snapshot (anyone's), for `compactEvery`. */
  private since = 0
  private writing = false
  /** The last snapshot was given up (the key changed while it was sealed): see retry. */
  private givenUp = false
  /** A snapshot is due but waits for other devices to hold more (their receipts). */
  private awaitsReceipts = false
  private retryTimer: ReturnType<typeof setTimeout> | undefined
  /** Snapshots being written: close() lets them finish storing. */
  private written: Promise<unknown> = Promise.resolve()
  /** Ids of the snapshots this device wrote in this session (base64url). */
  private readonly ownIds = new Set<string>()
  /** The latest snapshot record's id this device has folded. */
  private lastSeen: string | undefined

  /**
   * @example
   * ```ts
   * const writer = new SnapshotWriter(host, source)
   * writer.counted(batchSize, true)   // after each batch sent (or received: `false`)
   * await writer.close()
   * ```
   */
  constructor(
    private readonly host: SnapshotHost,
    private readonly source: SnapshotSource,
  ) {
    this.schedule = new SnapshotSchedule({ every: host.ctx.compactEvery })
  }

  /** A snapshot is being sealed and written: the key must not rotate under it. */
  get busy(): boolean {
    return this.writing
  }

  /**
   * `n` updates went by (messages: a batch of sends counts each). The device whose send crosses
   * the mark writes the snapshot (fewer races than every device at once); its copy on the replica
   * thread starts half the way there.
   */
  counted(n: number, sending: boolean): void {
    this.since += n
    const { compactEvery } = this.host.ctx
    if (sending && !this.source.started && compactEvery > 0 && this.since >= compactEvery / 2) this.source.start()
    if (sending) this.maybeWrite()
  }

  /** The latest snapshot record, as folded: someone else's restarts the count. */
  noteLatest(snapshotId: string | undefined): void {
    if (snapshotId === this.lastSeen) return
    // Our own reset the count when it began: what was sent while it was sealed counts towards the next.
    if (this.lastSeen !== undefined && !this.ownIds.has(snapshotId ?? '')) this.since = 0
    this.lastSeen = snapshotId
  }

  /** Other devices' receipts moved: a snapshot that waited for them may be due now. */
  receiptsMoved(): void {
    if (this.awaitsReceipts) this.maybeWrite()
  }

  /**
   * Seal the inner document (or `state`, for tests that play a dishonest member) as a snapshot
   * and write it.
   */
  write(state?: Uint8Array): Promise<void> {
    const job = this.sealAndWrite(state)
    this.written = Promise.all([this.written, job.catch(() => undefined)])
    return job
  }

  /** A due snapshot, written as an app's `writeSnapshot()` would be: once loaded, and not once closed. */
  private async writeWhenReady(): Promise<void> {
    await this.host.ready()
    this.host.assertOpen()
    return this.write()
  }

  /** Stop retrying; settles once a snapshot whose envelopes are written is stored. */
  async close(): Promise<void> {
    clearTimeout(this.retryTimer)
    await this.written
  }

  /**
   * Snapshot once `compactEvery` updates went by since the last snapshot, spaced with the
   * history's size and kept to a share of the time (snapshot-schedule.ts).
   */
  private maybeWrite(): void {
    const { host } = this
    const since = host.membership.snapshot?.coversSeq ?? 0
    // One monotonic clock for the schedule (its pauses measure with it too).
    const now = performance.now()
    // Without every key of the history (a 'from-join' member, one away for some epochs) this
    // device cannot write one: leave it to others.
    if (this.writing || host.closed || !historyKeys(host.epochKeys, host.epoch)) return
    const at = { since: this.since, cursor: host.cursor, coveredSeq: since, now }
    if (!this.schedule.due(at)) {
      // Held back only by its share of the time: tried again when that is over, send or not.
      if (this.schedule.due({ ...at, now: Number.POSITIVE_INFINITY })) this.retry()
      return
    }
    // The relay compacts only once every member device holds what a snapshot covers: while
    // one is far behind (offline), a snapshot would only cost every device a download.
    // (Relay rows, not envelopes: each holds many. "Far behind" = missing over half of what
    // came since the last snapshot.) Their next receipts ask again (receiptsMoved).
    const behind = host.cursor - Math.floor((host.cursor - since) / 2)
    for (const device of host.membership.devices.keys()) {
      if (device !== host.ctx.identity.deviceId && host.storedBy(device) < behind) {
        this.awaitsReceipts = true
        return
      }
    }
    this.awaitsReceipts = false
    this.since = 0
    this.writing = true
    this.givenUp = false
    this.schedule.started(now)
    void this.writeWhenReady()
      // Closing while it was sealed: the next session writes one when its count is reached.
      .catch((err) => (host.closed && err instanceof PetrelError && err.code === ErrorCode.Closed) || host.report(err, 'could not write a history snapshot'))
      .finally(() => {
        this.writing = false
        this.schedule.finished(performance.now())
        if (this.givenUp) this.retry()
      })
  }

  /**
   * Try again once the schedule allows, without waiting for a send: after a snapshot given up
   * (it is sealed over many paced steps, so a key rotation, every 1,000 messages by any member,
   * often lands in it) or held back by its share of the time. When the burst that crossed the
   * mark was over by then, no send came to try again, and the relay kept the whole history
   * until the conversation's next message.
   */
  private retry(): void {
    this.givenUp = false
    if (this.retryTimer !== undefined || this.host.closed) return
    const timer = setTimeout(() => {
      this.retryTimer = undefined
      this.maybeWrite()
    }, this.schedule.waitMs(performance.now()) + RETRY_MARGIN_MS)
    // Never what keeps a process alive.
    ;(timer as { unref?: () => void }).unref?.()
    this.retryTimer = timer
  }

  /** Given up (tried again later, as one given up for a key change). */
  private giveUp(): void {
    this.since = Math.max(this.since, this.host.ctx.compactEvery)
    this.givenUp = true
  }

  private async sealAndWrite(state?: Uint8Array): Promise<void> {
    const { host } = this
    // After everything received so far is applied: the snapshot then holds every row up to the
    // cursor. Encoding, sealing and storing it (a few hundred ms at 20,000 messages) happen
    // outside the send queue, so sends made meanwhile do not wait for them; it enters the
    // queue only to write its envelopes.
    await host.incomingSettled()
    // Changes Yjs still holds back for their predecessors are in no copy's encoding, yet their
    // rows would be covered and compacted: a fresh device would never get them. (A message
    // sealed again after a stale refusal comes in a later row than the messages sent after it,
    // which wait for it.)
    if (host.inner.store.pendingStructs !== null || host.inner.store.pendingDs !== null) return this.giveUp()
    // Not past anything still held back: the snapshot must hold every row it covers.
    const coversSeq = host.coverableThrough
    const epoch = host.epoch
    // Without every key (a 'from-join' member) we hold only part of the history anyway.
    const keys = historyKeys(host.epochKeys, epoch)
    if (!keys || coversSeq === 0) return
    // The work starts here, and each of its steps is paced to the snapshot's share of the
    // time (snapshot-schedule.ts).
    this.schedule.working(performance.now())
    const pause = () => this.schedule.pause()
    // Local changes already in the document reach the copy when their flush issues its
    // commit (the conversation feeds the copy): the queue as it stands now is waited for.
    const encoded = state ?? (await this.source.encode(host.inner, host.outgoing, () => host.refusedTombstones()))
    const plain = await sealSnapshot(encoded, host.id, epoch, keys, pause)
    const snapshotId = randomBytes(16)
    // Each part sealed must fit the relay's envelope limit: at least 16 KiB a part made every
    // part too large on a relay allowing 16 KiB or less (the sealing adds ~300 bytes).
    const partBytes = Math.max(MIN_PART_BYTES, host.ctx.connection.maxEnvelopeBytes - 4096)
    const parts = Math.max(1, Math.ceil(plain.length / partBytes))
    const { identity } = host.ctx
    const envelopes: Uint8Array[] = []
    for (let part = 0; part < parts; part++) {
      // A part per step: sealing and signing all of a 5 MB snapshot at once held this thread
      // ~40 ms (sends and received rows waited); a part is ~2 ms.
      await pause()
      envelopes.push(
        await sealEnvelope({
          room: host.id,
          epoch,
          key: keys[epoch]!,
          senderDevicePub: identity.devicePub,
          senderDeviceSecret: identity.deviceSecret,
          update: plain.subarray(part * partBytes, (part + 1) * partBytes),
          snapshot: { snapshotId, coversSeq, part, parts },
        }),
      )
    }
    const record = await host.ctx.signRecord(RecordKind.Snapshot, encodeSnapshotBody({ room: host.id, coversSeq, snapshotId, parts, at: Date.now() }))
    this.ownIds.add(toBase64Url(snapshotId))
    // Each part goes in an outer transaction of its own, a paced step apart, the record with the
    // last: one transaction of a 5 MB snapshot held this thread 60-130 ms (Yjs, the provider
    // and the frames each copy it). The relay sees what it saw before: an update over its frame
    // limit was split into pieces anyway, and the record still rides with the last part, so a
    // part refused with it (a stale key) still gets the record refused.
    await host.idsTaken()
    const written: Uint8Array[] = []
    let givenUp = false
    try {
      for (let i = 0; i < envelopes.length && !givenUp; i++) {
        await pause()
        const last = i === envelopes.length - 1
        const updates = await host.afterOutgoing(() => {
          host.assertOpen()
          // The key changed while it was sealed (a member left, another device rotated): the
          // relay would refuse it. Given up; a scheduled one is tried again under the new key
          // (retry; parts already written are covered and compacted by a later snapshot).
          if (host.epoch !== epoch) return undefined
          this.writingPart.now = true
          try {
            const { outer } = host
            return host.writeOuter((log, rec) => {
              log.set(envelopeKey(outer.clientID, Y.getState(outer.store, outer.clientID)), envelopes[i]!)
              if (last) rec.set(envelopeKey(outer.clientID, Y.getState(outer.store, outer.clientID)), record)
            })
          } finally {
            this.writingPart.now = false
          }
        })
        if (updates === undefined) givenUp = true
        else written.push(...updates)
      }
    } finally {
      // What was written is in the outer log and on its way to the relay: stored in any case.
      if (written.length > 0) await host.storeOuter(written)
    }
    if (givenUp) return this.giveUp()
    await host.foldRecords()
  }
}
