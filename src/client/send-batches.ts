/**
 * Sends on their way into the inner document: signed and written in batches, in the order
 * `send()` was called.
 *
 * Sends made together share one batch: one signature (message-signature.ts: a batch entry in
 * `messageBatches`, each message naming it and its place), one transaction, and so one update
 * and one envelope. A batch waits for the sealer to be free (the previous batch sealed and its
 * commit on its way), so under load batches grow with the load instead of staying one turn's
 * worth: at 10,000 sends a second, two signatures per few messages were a fifth of the
 * sender's time, and a signature alone was two thirds of a send's CPU time.
 */
import type * as Y from 'yjs'
import { randomBytes, toBase64Url } from '../shared/crypto/index.js'
import { INNER_MESSAGE_BATCHES, INNER_MESSAGES } from './inner-guard.js'
import { type MessageBatchEntry, signMessage, signMessageBatch } from './message-signature.js'
import { MERGE_BYTES, sendsForBatch } from './seal-chunks.js'
import type { StoredMessage } from './shown-list.js'

/** What the batches read and ask of their conversation. */
export interface SendBatchesHost {
  readonly id: string
  readonly inner: Y.Doc
  readonly userId: string
  readonly deviceSecret: Uint8Array
  /** The relay's envelope limit: a batch is sealed as one envelope, within half of it. */
  readonly maxEnvelopeBytes: number
  /** Settles once the sealer is free for the next batch (see Conversation.sealerFree). */
  sealerFree(): Promise<unknown>
  /** Run a local change of the inner document; settles once its envelope is stored locally. */
  writeInner(change: () => void, ids: string[]): Promise<void>
  report(err: unknown, context: string): void
}

interface PendingSend {
  id: string
  value: StoredMessage
  /** The text's length in bytes. */
  bytes: number
  resolve: () => void
  reject: (err: unknown) => void
}

export class SendBatches {
  /** Sends waiting for their signature, in the order send() was called. */
  private pending: PendingSend[] = []
  /** Settles once the last batch of sends so far is in the document: batches enter it in order. */
  private turn: Promise<void> = Promise.resolve()

  /**
   * @example
   * ```ts
   * const batches = new SendBatches(host)
   * await batches.add(id, { t: 'hi', at, h, n, d }, 2)   // signed, written, stored locally
   * ```
   */
  constructor(private readonly host: SendBatchesHost) {}

  /** Sign and write one message; settles once its envelope is stored locally (rejects if it is not). */
  add(id: string, value: StoredMessage, bytes: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ id, value, bytes, resolve, reject })
      // The first of the sends made together: every other one made in the same turn joins this
      // batch, and those made while the last batch is still being stored wait for it
      // (sealerFree), so they are signed and written as one batch.
      if (this.pending.length === 1) this.schedule()
    })
  }

  /** Settles once every send accepted so far is written into the document (a batch may queue the next). */
  async drained(): Promise<void> {
    for (let turn = this.turn; ; turn = this.turn) {
      await turn
      if (turn === this.turn) return
    }
  }

  private schedule(): void {
    this.turn = this.turn
      .then(() => this.host.sealerFree())
      .then(() => this.writeAll())
      .catch((err) => this.host.report(err, 'could not write sends'))
  }

  private async writeAll(): Promise<void> {
    // Everything that waited goes now (sends made while this runs too), in as many batches as
    // it takes: each still has a signature of its own, but they share one flush and commit.
    while (this.pending.length > 0) await this.writeBatch()
  }

  /**
   * Sign a batch and write it into the document, in one transaction. One send is signed alone
   * (`s`); several share one batch signature.
   */
  private async writeBatch(): Promise<void> {
    const { host } = this
    // A batch is one inner update, and so one envelope: it takes what fits the sealing limit
    // (seal-chunks.ts, half the relay's envelope limit: room for a low estimate), the rest goes
    // in the next batch. Sealed alone, it needs no Y.mergeUpdates (a fifth of a burst's sending).
    const budget = Math.min(MERGE_BYTES, (host.maxEnvelopeBytes - 1024) / 2)
    const batch = this.pending.splice(0, sendsForBatch(this.pending, budget))
    let written: Promise<void>
    try {
      const messages = host.inner.getMap<StoredMessage>(INNER_MESSAGES)
      if (batch.length === 1) {
        const { id, value } = batch[0]!
        value.s = await signMessage(host.id, id, value, host.deviceSecret)
        written = host.writeInner(() => messages.set(id, value), [id])
      } else {
        const nonce = toBase64Url(randomBytes(9))
        const key = `${host.userId}.${nonce}`
        const entry = await signMessageBatch(
          host.id,
          key,
          batch.map(({ id, value }) => ({ id, m: value })),
          host.deviceSecret,
        )
        batch.forEach(({ value }, i) => {
          value.b = nonce
          value.i = i
        })
        written = host.writeInner(
          () => {
            host.inner.getMap<MessageBatchEntry>(INNER_MESSAGE_BATCHES).set(key, entry)
            for (const { id, value } of batch) messages.set(id, value)
          },
          batch.map(({ id }) => id),
        )
      }
    } catch (err) {
      for (const item of batch) item.reject(err)
      return
    }
    // Not awaited: the next batch is written while this one is sealed and stored.
    written.then(
      () => {
        for (const item of batch) item.resolve()
      },
      (err: unknown) => {
        for (const item of batch) item.reject(err)
      },
    )
  }
}
