/**
 * This device's own messages in one conversation, as the outbox knows them: the envelope that
 * carried each, what the relay said of it (its row once stored: ✓; refused, stale, failed),
 * and the stored row of each envelope (`sent:` rows, conversation-record.ts).
 *
 * A message belongs to one envelope at a time: sent again (a retry, a re-seal after a stale
 * refusal) it leaves the envelope it was in, whose row then names only the messages still in it
 * or is deleted. Every change here is in memory first; `rowPuts` gives the writes that store it,
 * for the caller to commit with whatever else it stores.
 */
import { decodeOwn, decodeSentEnvelope, encodeSentEnvelope, keyOf, type OwnMessageState } from './conversation-record.js'

/** A write of the device store: a row's new value, or null to delete it. */
export type Put = [string, Uint8Array | null]

export class OwnMessages {
  private readonly states = new Map<string, OwnMessageState>()
  /** Envelope key → the messages sealed in it (some may have left it since: see inEnvelope). */
  private readonly byEnvelope = new Map<string, string[]>()
  /** Envelope key → the key of its stored row. */
  private readonly rowKeys = new Map<string, string>()

  /**
   * @example
   * ```ts
   * const own = new OwnMessages(convId)
   * const tidy = own.load(ownRows, sentRows)          // at open; commit `tidy`
   * const puts: Put[] = []
   * own.sealed([{ envelopeKey, msgIds }], puts)      // commit `puts` with the envelope
   * for (const [id, state] of own.inEnvelope(envelopeKey)) state.seq = ackedSeq
   * ```
   */
  constructor(private readonly convId: string) {}

  get(id: string): OwnMessageState | undefined {
    return this.states.get(id)
  }

  has(id: string): boolean {
    return this.states.has(id)
  }

  values(): IterableIterator<OwnMessageState> {
    return this.states.values()
  }

  [Symbol.iterator](): IterableIterator<[string, OwnMessageState]> {
    return this.states.entries()
  }

  /**
   * Read the stored rows: format 1 (`own:`, one per message, no longer written) and format 2
   * (`sent:`, one per envelope). Returns the writes that tidy them, for the caller to commit:
   * rows naming messages that are no longer theirs rewritten (or deleted), and format-1 rows
   * turned into rows per envelope, so the next start reads one row per envelope.
   */
  load(ownRows: ReadonlyArray<readonly [string, Uint8Array]>, sentRows: ReadonlyArray<readonly [string, Uint8Array]>): Put[] {
    // A message listed twice (an envelope's row computed before its messages moved to a new
    // envelope, but issued after the move's commit: refusals and acknowledgements wait for the
    // incoming chain): the most advanced state wins, as no message goes back from ✓ to pending,
    // or from sent again to refused. Refused as stale is the earliest of all: the message leaves
    // that envelope when it is sealed again, and whatever it meets after that is later.
    const rank = (s: OwnMessageState) => (s.seq > 0 ? 3 : s.stale ? 0 : s.failure === '' ? 2 : 1)
    const offer = (msgId: string, state: OwnMessageState) => {
      const have = this.states.get(msgId)
      if (!have || rank(state) >= rank(have)) this.states.set(msgId, state)
    }
    const legacy: string[] = []
    const prefix = keyOf.ownPrefix(this.convId).length
    for (const [key, value] of ownRows) {
      const msgId = key.slice(prefix)
      legacy.push(msgId)
      offer(msgId, decodeOwn(value))
    }
    const rows = sentRows.map(([key, value]) => ({ key, row: decodeSentEnvelope(value) }))
    for (const { key, row } of rows) {
      this.rowKeys.set(row.envelopeKey, key)
      for (const msgId of row.msgIds) offer(msgId, { envelopeKey: row.envelopeKey, seq: row.seq, failure: row.failure, refused: row.refused, stale: row.stale })
    }
    for (const [msgId, state] of this.states) {
      const list = this.byEnvelope.get(state.envelopeKey)
      if (list) list.push(msgId)
      else this.byEnvelope.set(state.envelopeKey, [msgId])
    }
    const rewrite = new Set<string>()
    for (const { row } of rows) if (row.msgIds.some((id) => this.states.get(id)?.envelopeKey !== row.envelopeKey)) rewrite.add(row.envelopeKey)
    for (const id of legacy) rewrite.add(this.states.get(id)!.envelopeKey)
    const tidy: Put[] = legacy.map((id) => [keyOf.own(this.convId, id), null])
    for (const key of rewrite) this.rowPuts(key, tidy)
    return tidy
  }

  /**
   * Messages just sealed, each chunk in a new envelope (pending, no failure): they leave the
   * envelopes they were in. The rows of both are appended to `puts`.
   */
  sealed(chunks: ReadonlyArray<{ envelopeKey: string; msgIds: string[] }>, puts: Put[]): void {
    const left = new Set<string>()
    for (const { envelopeKey, msgIds } of chunks) {
      for (const msgId of msgIds) {
        const before = this.states.get(msgId)?.envelopeKey
        if (before) left.add(before)
        this.states.set(msgId, { envelopeKey, seq: 0, failure: '' })
      }
      if (msgIds.length > 0) {
        this.byEnvelope.set(envelopeKey, msgIds)
        this.rowPuts(envelopeKey, puts)
      }
    }
    for (const key of left) this.rowPuts(key, puts)
  }

  /**
   * Messages being written into the document, not sealed yet: pending, in no envelope (nothing
   * is stored of them until `sealed`). A message this device knows already is left as it is.
   */
  writing(msgIds: Iterable<string>): void {
    for (const msgId of msgIds) if (!this.states.has(msgId)) this.states.set(msgId, { envelopeKey: '', seq: 0, failure: '' })
  }

  /**
   * Messages whose batch failed to store after its envelope went to the relay: failed with
   * `failure` but left in their envelope, so the relay's ✓ still finds (and clears) them. One
   * acknowledged already is left as it is. Returns those marked.
   */
  failedInEnvelope(msgIds: Iterable<string>, failure: string): string[] {
    const marked: string[] = []
    for (const msgId of msgIds) {
      const state = this.states.get(msgId)
      if (state?.seq !== 0 || state.failure !== '') continue
      state.failure = failure
      marked.push(msgId)
    }
    return marked
  }

  /** Messages whose batch failed to store: in memory only, failed with `failure`, in no envelope. */
  failedToStore(msgIds: Iterable<string>, failure: string): void {
    for (const msgId of msgIds) this.states.set(msgId, { envelopeKey: '', seq: 0, failure })
  }

  /** The messages still in envelope `envelopeKey` (not sent again in another, not discarded), with their state. */
  inEnvelope(envelopeKey: string): Array<[string, OwnMessageState]> {
    const out: Array<[string, OwnMessageState]> = []
    for (const msgId of this.byEnvelope.get(envelopeKey) ?? []) {
      const state = this.states.get(msgId)
      if (state?.envelopeKey === envelopeKey) out.push([msgId, state])
    }
    return out
  }

  /** Whether `envelopeKey` is the envelope of one of our messages (refused or not). */
  holds(envelopeKey: string): boolean {
    return this.byEnvelope.has(envelopeKey)
  }

  /**
   * The relay refused these envelopes. Refused as `stale` (sealed under an epoch no longer
   * current), their messages are marked to go again under the new key; otherwise they fail for
   * good with `failure` (their tombstones are the caller's to send). Returns the messages so
   * marked and the envelopes that held them. A message refused for good already is left out:
   * a full relay that stored nothing of it refuses its resend again, and a second tombstone
   * would only be refused in turn.
   */
  refused(envelopeKeys: Iterable<string>, stale: boolean, failure: string): { ids: string[]; envelopes: Set<string> } {
    const ids: string[] = []
    const envelopes = new Set<string>()
    for (const key of envelopeKeys) {
      for (const [msgId, state] of this.inEnvelope(key)) {
        if (state.refused) continue
        if (stale) state.stale = true
        else {
          state.failure = failure
          state.refused = true
        }
        ids.push(msgId)
        envelopes.add(key)
      }
    }
    return { ids, envelopes }
  }

  /**
   * Every message still pending fails with `failure` (the relay denied the conversation: nothing
   * pending can be delivered); the rows that store it are appended to `puts`.
   */
  failPending(failure: string, puts: Put[]): void {
    const envelopes = new Set<string>()
    for (const state of this.states.values()) {
      if (state.seq === 0 && state.failure === '') {
        state.failure = failure
        envelopes.add(state.envelopeKey)
      }
    }
    for (const key of envelopes) this.rowPuts(key, puts)
  }

  /** `id` and the other failed messages still in its envelope: a retry sends them again together. */
  failedWith(id: string): string[] {
    const state = this.states.get(id)
    if (!state || !this.byEnvelope.has(state.envelopeKey)) return [id]
    return this.inEnvelope(state.envelopeKey)
      .filter(([m, s]) => m === id || s.failure)
      .map(([m]) => m)
  }

  /** Forget a message (discarded). Its envelope's row changes: `rowPuts` of its envelope gives the write. */
  delete(id: string): void {
    this.states.delete(id)
  }

  /**
   * The row of one envelope of ours as its messages' state stands now, appended to `puts`: the
   * messages still in it, or its deletion once none is.
   */
  rowPuts(envelopeKey: string, puts: Put[]): void {
    // A batch whose commit failed has no envelope (its state is only in memory).
    if (envelopeKey === '') return
    const ids = this.inEnvelope(envelopeKey).map(([m]) => m)
    let rowKey = this.rowKeys.get(envelopeKey)
    if (ids.length === 0) {
      if (rowKey === undefined) return
      this.rowKeys.delete(envelopeKey)
      puts.push([rowKey, null])
      return
    }
    if (rowKey === undefined) {
      rowKey = keyOf.sent(this.convId, ids[0]!, envelopeKey)
      this.rowKeys.set(envelopeKey, rowKey)
    }
    const { seq, failure, refused, stale } = this.states.get(ids[0]!)!
    puts.push([rowKey, encodeSentEnvelope({ envelopeKey, seq, failure, refused, stale, msgIds: ids })])
  }
}
