/**
 * Local inner updates on their way out: sealed into envelopes under the current key, written to
 * the outer log (whose update the provider uploads), and stored with them in one atomic commit,
 * so a send survives a reload or crash and the outer and inner logs never disagree.
 *
 * Everything queued while the previous batch was being written goes out as one batch:
 * signatures run concurrently, the envelopes land in one outer transaction, and one durable
 * commit covers them all (a commit per message measured ~2 ms, most of it the fsync). Batches
 * run in the conversation's send queue, one after another; each is sealed and sent while the
 * one before is still on its way to disk (`flushWaitMs`), and they settle in order.
 */
import * as Y from 'yjs'
import { sealEnvelope } from '../shared/envelope.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import type { ClientContext } from './client-context.js'
import type { OwnMessages, Put } from './own-messages.js'
import { chunkForSealing, MERGE_BYTES } from './seal-chunks.js'
import type { SnapshotSource } from './snapshot-source.js'
import { type Batch, COMMIT_SOON, type CommitOptions } from './storage/device-store.js'
import type { SessionWriterIds } from './writer-ids.js'
import { envelopeKey } from '../shared/outer-keys.js'

/** How long a flush waits at most for the commit before its own (see `flush`). */
let flushWaitMs = 2

/**
 * @internal Tests only: how long a flush waits at most for the commit before its own (2 ms by
 * default). A test that checks which sends share a batch sets it long, so that the batches it
 * sees do not depend on how fast its machine turns the event loop.
 *
 * @example setFlushWait(60_000); try { … } finally { setFlushWait() }
 */
export function setFlushWait(ms = 2): void {
  flushWaitMs = ms
}

/** What sealing reads and asks of its conversation. */
export interface SealQueueHost {
  readonly id: string
  readonly ctx: ClientContext
  readonly outer: Y.Doc
  readonly own: OwnMessages
  readonly source: SnapshotSource
  readonly writerIds: SessionWriterIds
  /** The current epoch, and the keys this device holds by epoch. */
  readonly epoch: number
  readonly epochKeys: ReadonlyMap<number, Uint8Array>
  /** Settles once this device holds a key (a conversation it was added to), or once it closes. */
  firstKey(): Promise<void>
  /** Someone left or was removed and the key has not changed since (membership.rotationDue). */
  readonly rotationDue: boolean
  /** Settles once the key changed after a removal (the due rotation folded), or once it closes. */
  rotationDone(): Promise<void>
  readonly closed: boolean
  /** Whether the provider's socket is open: what is written now is handed to the relay at once. */
  readonly handedToRelay: boolean
  /** Write to the outer log locally: what `fn` returned and the outer updates it made. */
  writeOuterKeys<T>(fn: (log: Y.Map<Uint8Array>) => T): { key: T; updates: Uint8Array[] }
  commit(batch: Batch, options?: CommitOptions): Promise<void>
  /** Run `job` in the send queue, after what was queued before. */
  afterOutgoing<T>(job: () => T | Promise<T>): Promise<T>
  /** `rows` rows were appended to the local log (compaction counts them). */
  appended(rows: number): void
  /** A local write failed: the log is not compacted at close. */
  storeFailed(): void
  statusesChanged(ids: string[]): void
  /** `n` updates (messages) were sealed under `epoch` and are durable (rotation and snapshots count them). */
  sealedDurably(epoch: number, n: number): void
  reportError(err: PetrelError): void
}

interface Queued {
  update: Uint8Array
  tags: string[]
  othersOnly?: boolean
  /** Rows to commit with this update (a refusal's, with its tombstone). */
  puts?: Put[]
  resolve: () => void
  reject: (err: unknown) => void
}

/**
 * @example
 * ```ts
 * const seals = new SealQueue(host)
 * await seals.add(update, [messageId])       // resolves once sealed and stored
 * await seals.stored()                       // as the conversation closes
 * ```
 */
export class SealQueue {
  private queue: Queued[] = []
  /** Set while what is queued waits for a due rotation (see flush). */
  private awaitingRotation = false
  /** The last flush's commit and what follows it: each flush waits for the one before its own. */
  private flushStored: Promise<void> = Promise.resolve()

  constructor(private readonly host: SealQueueHost) {}

  /**
   * Queue an inner update for sealing, tagged with the ids of the messages it carries. Resolves
   * once its envelope is stored; rejects (the messages failed, with the reason) if that fails.
   * `othersOnly`: for the other devices only (a tombstone), not for this device's own log.
   */
  add(update: Uint8Array, tags: string[], othersOnly = false, puts?: Put[]): Promise<void> {
    // The first change from resumed ids: their entry's delete starts now, while it is sealed.
    void this.host.writerIds.startTaking()
    return new Promise((resolve, reject) => {
      this.queue.push({ update, tags, othersOnly, puts, resolve, reject })
      if (this.queue.length === 1) void this.host.afterOutgoing(() => this.flush()).catch(() => undefined)
    })
  }

  /**
   * The conversation was refused for good while changes waited here (for a due rotation):
   * none can go now. They are rejected with `err`; their messages' state is the caller's.
   */
  failQueued(err: PetrelError): void {
    for (const item of this.queue.splice(0)) item.reject(err)
  }

  /** Settles once every batch flushed so far is stored (or failed). */
  stored(): Promise<void> {
    return this.flushStored
  }

  private async flush(): Promise<void> {
    const { host } = this
    if (host.rotationDue) {
      // Someone was removed and the key has not changed yet: sealed now, under the current key,
      // it would be readable by the member just removed (who holds that key; another admin's
      // removal may have raced ours). It waits for the new key instead, in the queue, and goes
      // then, not holding up the outgoing chain that writes the rotation itself. Closing
      // meanwhile, it fails (nothing of it is stored): sealed and stored under the old key, the
      // next session uploaded it for the removed member to read.
      if (host.closed) {
        const ids = this.queue.flatMap((item) => item.tags)
        const err = new PetrelError(ErrorCode.Closed, 'closed while a removal waited for the key to change: not sent', { conversationId: host.id })
        host.own.failedToStore(ids, err.message)
        host.statusesChanged(ids)
        this.failQueued(err)
        return
      }
      if (!this.awaitingRotation) {
        this.awaitingRotation = true
        void host.rotationDone().then(() => {
          this.awaitingRotation = false
          if (this.queue.length > 0) void host.afterOutgoing(() => this.flush()).catch(() => undefined)
        })
      }
      return
    }
    const batch = this.queue
    this.queue = []
    let epochUsed = -1
    /** Its envelopes went to the relay as they were written (the provider's socket was open). */
    let handed = false
    const failed = (err: unknown) => {
      host.storeFailed()
      // Nothing of this batch is stored (commits are atomic); what was stored before is intact.
      const reason = err instanceof PetrelError ? err : new PetrelError(ErrorCode.StorageFailed, String(err), { cause: err, conversationId: host.id })
      if (handed) {
        // On its way already (the provider sent it as it was written): it stays in its envelope,
        // in memory, failed for now, since nothing of it is on this disk and it may not have
        // reached the relay either. Taken out of its envelope as before, it was delivered while
        // its author saw it failed for good: the relay's ✓ named an envelope it no longer had,
        // and a retry found nothing to send. Now the ✓, if it comes, clears the failure
        // (relay-acks.ts), and a retry seals it again from memory.
        const ids = host.own.failedInEnvelope(
          batch.flatMap((item) => item.tags),
          `storage failed: ${reason.message}`,
        )
        host.reportError(reason)
        host.statusesChanged(ids)
        for (const item of batch) item.reject(reason)
        return
      }
      // The messages stay visible here as failed, with the reason, and the app hears of it.
      host.own.failedToStore(
        batch.flatMap((item) => item.tags),
        `storage failed: ${reason.message}`,
      )
      host.reportError(reason)
      host.statusesChanged(batch.flatMap((item) => item.tags))
      for (const item of batch) item.reject(reason)
    }
    let committed: Promise<void>
    let rows = 0
    try {
      const { identity } = host.ctx
      // Added to the conversation but the record with our keys has not arrived yet.
      if (host.epochKeys.size === 0) await host.firstKey()
      if (host.epochKeys.size === 0) throw new PetrelError(ErrorCode.Closed, 'closed before this device received the conversation key', { conversationId: host.id })
      const epoch = host.epoch
      epochUsed = epoch
      const key = host.epochKeys.get(epoch)!
      const chunks = chunkForSealing(batch, Math.min(MERGE_BYTES, (host.ctx.connection.maxEnvelopeBytes - 1024) / 2))
      const envelopes = await Promise.all(
        chunks.map((chunk) =>
          sealEnvelope({ room: host.id, epoch, key, senderDevicePub: identity.devicePub, senderDeviceSecret: identity.deviceSecret, update: chunk.update }),
        ),
      )
      if (host.writerIds.held) await host.writerIds.taken()
      const { outer } = host
      const written = host.writeOuterKeys((log) =>
        envelopes.map((envelope) => {
          const k = envelopeKey(outer.clientID, Y.getState(outer.store, outer.clientID))
          log.set(k, envelope)
          return k
        }),
      )
      handed = host.handedToRelay
      const puts: Put[] = []
      // Messages sent again (a retry, a re-seal) leave the row of the envelope they were in.
      host.own.sealed(
        chunks.map((chunk, i) => ({ envelopeKey: written.key[i]!, msgIds: chunk.tags })),
        puts,
      )
      for (const item of batch) if (item.puts) puts.push(...item.puts)
      // A tombstone is for receivers only: in the local log it would delete the failed message
      // it stands for when the log is next read (this device keeps it, with its error, to
      // retry or discard). The replica still takes it, so a snapshot carries no content that
      // was never delivered.
      host.source.take(batch.filter((item) => item.othersOnly).map((item) => item.update))
      // Handed to the relay already (writeOuter's update went out through the provider): the
      // local copy may wait for company (see CommitOptions.soon), `send()` still resolves only
      // once it is durable. A device sending 10,000 messages a second made a transaction per
      // flush, ~190 a second, each writing its pages twice (WAL, then the checkpoint) with its
      // own fsync: grouped, the devices spent ~10% less CPU a message (20–25% at 1,000/s;
      // BENCHMARKS.md, twenty-fourth session). Offline, nothing else holds the message: it is
      // written at once.
      committed = host.commit(
        {
          append: [
            ...batch.filter((item) => !item.othersOnly).map((item) => ({ convId: host.id, doc: 'inner' as const, bytes: item.update })),
            ...written.updates.map((bytes) => ({ convId: host.id, doc: 'outer' as const, bytes })),
          ],
          put: puts,
        },
        host.handedToRelay ? COMMIT_SOON : undefined,
      )
      rows = batch.length + written.updates.length
    } catch (err) {
      failed(err)
      return
    }
    host.appended(rows)
    // Rotation and snapshots count updates (messages), not envelopes: an envelope may hold many.
    // A batch of sends is one update with a tag per message.
    let sealedUpdates = 0
    for (const item of batch) sealedUpdates += Math.max(1, item.tags.length)
    // Pipelined one deep: the next batch is sealed and sent while this one's commit is on its
    // way to disk. A commit took 5 ms at the median and 30 ms at p99 on this VM at 10,000
    // sends a second, and each flush waited for its own: most of a message's time on the
    // sender. Commits land in the order issued, so batches still settle (send() resolves,
    // durable) in order, and sends made meanwhile still wait to share the next batch.
    const previous = this.flushStored
    this.flushStored = committed.then(
      () => {
        for (const item of batch) item.resolve()
        host.statusesChanged(batch.flatMap((item) => item.tags))
        host.sealedDurably(epochUsed, sealedUpdates)
      },
      (err: unknown) => failed(err),
    )
    // At most 2 ms, though: a commit that takes 30 ms (this VM's disk at p99, shared by three
    // processes), or one waiting for company (up to 20 ms), no longer holds back what is sent
    // after it. Commits still queue in order; what waits behind a slow one joins the next group
    // commit. (4 ms until the twenty-fourth session. Since a flush's own commit may wait for
    // company, the flush after it waits this long almost every time: at 1,000 sends a second
    // 4 ms took the median to 5.3–5.6 ms, 2 ms to 3.5–4.8 ms, against 2.7–3.6 ms before.)
    let timer: ReturnType<typeof setTimeout> | undefined
    await Promise.race([previous, new Promise<void>((r) => (timer = setTimeout(r, flushWaitMs)))])
    clearTimeout(timer)
  }
}
