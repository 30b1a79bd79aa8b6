/**
 * Typing indicators over y-websocket awareness, encrypted with the conversation key and signed
 * by the sending device: the relay forwards awareness updates it cannot read, and a member
 * cannot say another is typing (before the signature, a member holding the key could seal
 * `{u: someone else}` as its own state). A typing flag clears itself after TYPING_TIMEOUT_MS on
 * the sender, and receivers also forget it after that long without a refresh, so a vanished
 * device never types for ever.
 *
 * ```
 * awareness state := { v: 2, e: epoch, d: deviceId, a: ms (the sender's clock, rising), n: base64url(nonce24),
 *                      c: base64url(ciphertext), s: base64url(signature) }
 * plaintext       := JSON { u: userId, t: typing }
 * aad             := varString 'petrel/v1/awareness' • varString room • varUint epoch
 * signature       := Ed25519 by device d, domain 'awareness', over
 *                    varString room • varUint epoch • varUint a • nonce(24) • varUint8Array ciphertext
 * ```
 * A state counts only if its signature verifies, `d` is a device of a current member, and `u`
 * is that member; and only the newest (`a`) of a device's states counts. A state shows typing
 * for TYPING_TIMEOUT_MS from when this device first saw it: the same signed state sent again
 * (by a member, or the relay, replaying it) neither extends nor revives it, nor outranks the
 * newer one that said the typing stopped. Version 1 states (unsigned, before the fortieth
 * session) are ignored.
 */
import * as encoding from 'lib0/encoding'
import type { Awareness } from 'y-protocols/awareness'
import { fromBase64Url, open, randomNonce, seal, SignatureDomain, signWithDomain, toBase64Url, verifyWithDomain } from '../shared/crypto/index.js'

export const TYPING_TIMEOUT_MS = 5_000

const aadFor = (room: string, epoch: number) => {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, 'petrel/v1/awareness')
  encoding.writeVarString(e, room)
  encoding.writeVarUint(e, epoch)
  return encoding.toUint8Array(e)
}

/** What the device signs of a state. */
const signedPart = (room: string, epoch: number, at: number, nonce: Uint8Array, ciphertext: Uint8Array) => {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, room)
  encoding.writeVarUint(e, epoch)
  encoding.writeVarUint(e, at)
  encoding.writeUint8Array(e, nonce)
  encoding.writeVarUint8Array(e, ciphertext)
  return encoding.toUint8Array(e)
}

/** What a received state says once checked (its author, flag, sender's time, when first seen here); null when it failed a check. */
type Said = { u: string; t: boolean; d: string; a: number; seen: number } | null

/** Verdicts kept, by signature: enough for every device of a large room, bounded against a flood. */
const SAID_KEPT = 1024

/** The sending device of presence: its id and signing key. */
export interface PresenceDevice {
  readonly id: string
  readonly secret: Uint8Array
}

export class Presence {
  /** userId → when we last heard they were typing. */
  private readonly typingSince = new Map<string, number>()
  /** Each received state's verdict, by its signature: checked once, however often it is sent. */
  private readonly said = new Map<string, Said | 'checking'>()
  /** deviceId → the sender's time of its newest state verified here. */
  private readonly newest = new Map<string, number>()
  /** The sender's time of this device's last state (rising, whatever the clock does). */
  private lastAt = 0
  /** The latest setTyping call: a signature that finishes after a later call's is not sent. */
  private generation = 0
  private signing: Promise<void> = Promise.resolve()
  private destroyed = false
  private clearTimer: ReturnType<typeof setTimeout> | undefined
  private expiryTimer: ReturnType<typeof setTimeout> | undefined
  private readonly onChange: () => void

  constructor(
    private readonly awareness: Awareness,
    private readonly room: string,
    private readonly userId: string,
    private readonly keyFor: (epoch: number) => Uint8Array | undefined,
    private readonly currentEpoch: () => number,
    private readonly changed: () => void,
    /** The member a device is of, for current members' devices only. */
    private readonly ownerOf: (deviceId: string) => string | undefined,
    private readonly device: PresenceDevice,
  ) {
    this.onChange = () => this.read()
    awareness.on('change', this.onChange)
  }

  /**
   * Say whether this user is typing here (sealed and signed, then sent as this device's state).
   * A call made while an earlier one is still being signed supersedes it.
   */
  setTyping(typing: boolean): void {
    clearTimeout(this.clearTimer)
    const epoch = this.currentEpoch()
    const key = this.keyFor(epoch)
    if (!key) return
    const nonce = randomNonce()
    const plain = new TextEncoder().encode(JSON.stringify({ u: this.userId, t: typing }))
    const c = seal(key, nonce, plain, aadFor(this.room, epoch))
    this.lastAt = Math.max(Date.now(), this.lastAt + 1)
    const at = this.lastAt
    const generation = ++this.generation
    this.signing = this.signing
      .then(async () => {
        const signature = await signWithDomain(SignatureDomain.Awareness, this.device.secret, signedPart(this.room, epoch, at, nonce, c))
        if (generation !== this.generation || this.destroyed) return
        this.awareness.setLocalState({ v: 2, e: epoch, d: this.device.id, a: at, n: toBase64Url(nonce), c: toBase64Url(c), s: toBase64Url(signature) })
      })
      .catch(() => undefined)
    if (typing) this.clearTimer = setTimeout(() => this.setTyping(false), TYPING_TIMEOUT_MS)
  }

  /** userIds typing now. */
  typingUsers(now = Date.now()): string[] {
    return [...this.typingSince].filter(([, at]) => now - at < TYPING_TIMEOUT_MS).map(([u]) => u)
  }

  /** Re-read every state (e.g. after membership changed: a new member's typing now counts). */
  refresh(): void {
    this.read()
  }

  private read(): void {
    if (this.destroyed) return
    const before = this.typingUsers().join()
    const now = Date.now()
    // Per person, what their newest verified state says (several devices, or states replayed).
    const latest = new Map<string, Exclude<Said, null>>()
    const pending = new Set<string>()
    for (const [clientId, state] of this.awareness.getStates()) {
      if (clientId === this.awareness.clientID) continue
      const said = this.check(state)
      if (said === undefined) continue
      if ('pending' in said) {
        // Its signature is being checked: its device's person keeps what they showed meanwhile.
        pending.add(said.pending)
        continue
      }
      if (said.u === this.userId) continue
      const other = latest.get(said.u)
      if (!other || said.seen > other.seen || (said.seen === other.seen && said.a > other.a)) latest.set(said.u, said)
    }
    for (const u of [...this.typingSince.keys()]) if (!latest.has(u) && !pending.has(u)) this.typingSince.delete(u)
    for (const [u, said] of latest) {
      // Typing for a while from when this device first saw the state saying so, not from each read.
      if (said.t && now - said.seen < TYPING_TIMEOUT_MS) this.typingSince.set(u, said.seen)
      else if (!pending.has(u)) this.typingSince.delete(u)
    }
    if (this.typingUsers().join() !== before) this.changed()
    clearTimeout(this.expiryTimer)
    if (this.typingSince.size > 0) {
      this.expiryTimer = setTimeout(() => {
        for (const [u, at] of this.typingSince) if (Date.now() - at >= TYPING_TIMEOUT_MS) this.typingSince.delete(u)
        this.changed()
      }, TYPING_TIMEOUT_MS)
    }
  }

  /**
   * What a state says, if it passed every check (its signature once, its device's member at each
   * read: a device removed since no longer counts; and it is its device's newest); `pending`
   * while the signature is checked; undefined when it failed one.
   */
  private check(state: unknown): Exclude<Said, null> | { pending: string } | undefined {
    if (state === null || typeof state !== 'object') return undefined
    const s = state as { v?: unknown; e?: unknown; d?: unknown; a?: unknown; n?: unknown; c?: unknown; s?: unknown }
    if (s.v !== 2 || typeof s.e !== 'number' || typeof s.d !== 'string' || typeof s.n !== 'string' || typeof s.c !== 'string' || typeof s.s !== 'string') return undefined
    if (typeof s.a !== 'number' || !Number.isSafeInteger(s.a) || s.a < 0 || !Number.isSafeInteger(s.e) || s.e < 0) return undefined
    const owner = this.ownerOf(s.d)
    if (owner === undefined) return undefined
    const device = s.d
    const at = s.a
    // An older state of a device that said something since (one replayed) says nothing.
    if (at < (this.newest.get(device) ?? 0)) return undefined
    const known = this.said.get(s.s)
    if (known === 'checking') return { pending: owner }
    if (known !== undefined) return known !== null && known.u === owner && known.d === device && known.a === at ? known : undefined
    // Someone else's garbage in awareness is not our error to raise: it is only not shown.
    let opened: { u: string; t: boolean; verified: Promise<boolean> } | undefined
    try {
      const key = this.keyFor(s.e)
      const nonce = fromBase64Url(s.n)
      const c = fromBase64Url(s.c)
      if (key) {
        const parsed = JSON.parse(new TextDecoder().decode(open(key, nonce, c, aadFor(this.room, s.e)))) as { u?: unknown; t?: unknown }
        if (typeof parsed.u === 'string' && typeof parsed.t === 'boolean' && parsed.u === owner) {
          const verified = verifyWithDomain(SignatureDomain.Awareness, fromBase64Url(device), signedPart(this.room, s.e, at, nonce, c), fromBase64Url(s.s))
          opened = { u: parsed.u, t: parsed.t, verified }
        }
      }
    } catch {
      opened = undefined
    }
    const signature = s.s
    this.remember(signature, opened ? 'checking' : null)
    if (!opened) return undefined
    const { u, t } = opened
    opened.verified.then(
      (ok) => {
        if (ok) this.newest.set(device, Math.max(at, this.newest.get(device) ?? 0))
        this.remember(signature, ok ? { u, t, d: device, a: at, seen: Date.now() } : null)
        this.read()
      },
      () => this.remember(signature, null),
    )
    return { pending: owner }
  }

  /** Keep a verdict by signature, dropping the oldest past SAID_KEPT. */
  private remember(signature: string, said: Said | 'checking'): void {
    this.said.delete(signature)
    this.said.set(signature, said)
    if (this.said.size > SAID_KEPT) this.said.delete(this.said.keys().next().value as string)
  }

  destroy(): void {
    this.destroyed = true
    clearTimeout(this.clearTimer)
    clearTimeout(this.expiryTimer)
    this.awareness.off('change', this.onChange)
  }
}
