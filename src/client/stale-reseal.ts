/**
 * Own messages the relay refused as sealed under an epoch that was no longer current
 * (`stale`): not failures, they go again under the new key, each envelope sealed again once
 * with all of its messages. The refusal is stored in the outbox row (own-messages.ts), since
 * the relay holds a blank in its place and sync never sends it again: a device restarted before
 * the re-seal picks them up here at its next start.
 *
 * A message whose original envelope can no longer be opened (its key is gone) is marked failed,
 * with the reason, for the app to show and discard: never pending for good.
 */
import { constantTimeEqual } from '../shared/crypto/index.js'
import { keyCheckOf, readEnvelope } from '../shared/envelope.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import type { OwnMessages, Put } from './own-messages.js'

/** The first wait after a stale refusal under the key held, doubled with each more, up to the max. */
const BACKOFF_MS = 50
const BACKOFF_MAX_MS = 2_000

/** What the re-seal reads and asks of its conversation. */
export interface StaleResealHost {
  readonly id: string
  readonly closed: boolean
  readonly own: OwnMessages
  /** The current epoch's key, if this device holds it. */
  currentKey(): Uint8Array | undefined
  /** A removal waits for a new key: nothing is sealed under the current one (seal-queue.ts). */
  readonly rotationDue: boolean
  /** One of our envelopes in the outer log, as sealed. */
  envelope(envelopeKey: string): Uint8Array | undefined
  /** The inner update inside one of our envelopes, if a key this device holds opens it. */
  originalUpdate(envelopeKey: string): Uint8Array | undefined
  /** Seal `update` again, for messages `ids`, in the send queue. */
  seal(update: Uint8Array, ids: string[]): Promise<void>
  /** Store outbox rows (not waited for: a failure is reported). */
  saveRows(puts: Put[]): void
  statusesChanged(ids: string[]): void
  reportError(err: PetrelError): void
  report(err: unknown, context: string): void
}

export class StaleReseal {
  private readonly waiting = new Set<string>()
  /** Stale refusals of envelopes sealed under the key held, while it is held, and the re-seal they wait for. */
  private streak: { key: Uint8Array | undefined; count: number } = { key: undefined, count: 0 }
  private timer: ReturnType<typeof setTimeout> | undefined

  /**
   * @example
   * ```ts
   * const reseal = new StaleReseal(host)
   * reseal.add(msgId)              // each message of an envelope refused as stale
   * reseal.afterRefusal([envKey])  // now, or after a backoff if sealed under the key held
   * reseal.now()                   // a new key came: everything waiting goes
   * ```
   */
  constructor(private readonly host: StaleResealHost) {}

  /** Whether messages wait to be sealed again. */
  get pending(): boolean {
    return this.waiting.size > 0
  }

  /** A message refused as stale (or found so in the outbox at the start). */
  add(msgId: string): void {
    this.waiting.add(msgId)
  }

  /**
   * After a stale refusal of these envelopes: what was sealed under an older key than the one
   * held goes again at once. What was sealed under the key held (a device that restarted before
   * it stored the new epoch's record) waits, 50 ms and double that with each refusal more under
   * that key, up to 2 s: sealed again at once, it was refused ~500 times a second until the
   * record came, each time a blank in the relay's log. A new key (`now`) seals it again at
   * once, whatever the wait. Waiting for a new key instead of a time left messages unsent in a
   * chaos run: an epoch started again after a refusal keeps its number, and may not bring one.
   */
  afterRefusal(envelopes: Iterable<string>): void {
    const { host } = this
    const key = host.currentKey()
    const streak = this.streak
    if (streak.key !== key) {
      streak.key = key
      streak.count = 0
    }
    const held = key ? keyCheckOf(key) : undefined
    let underHeld = false
    for (const k of envelopes) {
      const bytes = host.envelope(k)
      if (!held || !bytes) continue
      try {
        if (constantTimeEqual(readEnvelope(bytes).keyCheck, held)) underHeld = true
      } catch {
        // Our own envelope, written by this device: it parses. Were it not, it goes again at once.
      }
    }
    if (!underHeld) return this.now()
    streak.count++
    if (this.timer !== undefined || host.closed) return
    const wait = Math.min(BACKOFF_MAX_MS, BACKOFF_MS * 2 ** (streak.count - 1))
    this.timer = setTimeout(() => {
      this.timer = undefined
      if (!host.closed && this.waiting.size > 0) this.now()
    }, wait)
  }

  /** Seal again what waits, once this device holds the current key (and no removal waits for a new one). */
  now(): void {
    const { host } = this
    if (!host.currentKey() || host.rotationDue) return
    // One envelope may carry several messages: each envelope is sealed again once, with all of them.
    const byEnvelope = new Map<string, string[]>()
    for (const msgId of this.waiting) {
      const state = host.own.get(msgId)
      if (!state) continue
      const ids = byEnvelope.get(state.envelopeKey)
      if (ids) ids.push(msgId)
      else byEnvelope.set(state.envelopeKey, [msgId])
    }
    this.waiting.clear()
    const unopened: string[] = []
    for (const [key, ids] of byEnvelope) {
      const update = host.originalUpdate(key)
      if (update) void host.seal(update, ids).catch((err) => host.report(err, 'could not re-seal a message'))
      else unopened.push(...ids)
    }
    // Not silently pending for good: failed, with the reason, for the app to show (and discard).
    if (unopened.length === 0) return
    for (const id of unopened) {
      const state = host.own.get(id)!
      state.failure = 'could not be sealed again: the key it was sealed under is gone'
      state.stale = false
    }
    const puts: Put[] = []
    for (const key of new Set(unopened.map((id) => host.own.get(id)!.envelopeKey))) host.own.rowPuts(key, puts)
    host.saveRows(puts)
    host.statusesChanged(unopened)
    host.reportError(new PetrelError(ErrorCode.EnvelopeRejected, `${unopened.length} message(s) refused as stale could not be sealed again: their key is gone`, { conversationId: host.id }))
  }

  /** Stop the backoff timer (the conversation closes). */
  stop(): void {
    clearTimeout(this.timer)
  }
}
