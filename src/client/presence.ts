/**
 * Typing indicators over y-websocket awareness, encrypted with the conversation key and signed
 * by the sending device: the relay forwards awareness updates it cannot read, and a member
 * cannot say another is typing (before the signature, a member holding the key could seal
 * `{u: someone else}` as its own state). A typing flag clears itself after TYPING_TIMEOUT_MS on
 * the sender, and receivers also forget it after that long without a refresh, so a vanished
 * device never types for ever.
 *
 * ```
 * awareness state := { v: 2, e: epoch, d: deviceId, n: base64url(nonce24), c: base64url(ciphertext), s: base64url(signature) }
 * plaintext       := JSON { u: userId, t: typing }
 * aad             := varString 'petrel/v1/awareness' • varString room • varUint epoch
 * signature       := Ed25519 by device d, domain 'awareness', over
 *                    varString room • varUint epoch • nonce(24) • varUint8Array ciphertext
 * ```
 * A state counts only if its signature verifies, `d` is a device of a current member, and `u`
 * is that member. Version 1 states (unsigned, before the forty-first session) are ignored.
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
const signedPart = (room: string, epoch: number, nonce: Uint8Array, ciphertext: Uint8Array) => {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, room)
  encoding.writeVarUint(e, epoch)
  encoding.writeUint8Array(e, nonce)
  encoding.writeVarUint8Array(e, ciphertext)
  return encoding.toUint8Array(e)
}

/** What a received state says once checked: its author and flag; null when it failed a check. */
type Said = { u: string; t: boolean } | null

/** The sending device of presence: its id and signing key. */
export interface PresenceDevice {
  readonly id: string
  readonly secret: Uint8Array
}

export class Presence {
  /** userId → when we last heard they were typing. */
  private readonly typingSince = new Map<string, number>()
  /** Each received state's verdict (a state is a new object per update): checked once. */
  private readonly said = new WeakMap<object, Said | 'checking'>()
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
    const generation = ++this.generation
    this.signing = this.signing
      .then(async () => {
        const signature = await signWithDomain(SignatureDomain.Awareness, this.device.secret, signedPart(this.room, epoch, nonce, c))
        if (generation !== this.generation || this.destroyed) return
        this.awareness.setLocalState({ v: 2, e: epoch, d: this.device.id, n: toBase64Url(nonce), c: toBase64Url(c), s: toBase64Url(signature) })
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
    const seen = new Set<string>()
    for (const [clientId, state] of this.awareness.getStates()) {
      if (clientId === this.awareness.clientID) continue
      const said = this.check(state)
      if (said === undefined) continue
      if ('pending' in said) {
        // Its signature is being checked: its device's person keeps what they showed meanwhile.
        seen.add(said.pending)
        continue
      }
      if (said.u === this.userId) continue
      seen.add(said.u)
      if (said.t) this.typingSince.set(said.u, Date.now())
      else this.typingSince.delete(said.u)
    }
    for (const u of [...this.typingSince.keys()]) if (!seen.has(u)) this.typingSince.delete(u)
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
   * read: a device removed since no longer counts); `pending` while the signature is checked;
   * undefined when it failed one.
   */
  private check(state: unknown): { u: string; t: boolean } | { pending: string } | undefined {
    if (state === null || typeof state !== 'object') return undefined
    const s = state as { v?: unknown; e?: unknown; d?: unknown; n?: unknown; c?: unknown; s?: unknown }
    if (s.v !== 2 || typeof s.e !== 'number' || typeof s.d !== 'string' || typeof s.n !== 'string' || typeof s.c !== 'string' || typeof s.s !== 'string') return undefined
    const owner = this.ownerOf(s.d)
    if (owner === undefined) return undefined
    const known = this.said.get(state)
    if (known === 'checking') return { pending: owner }
    if (known !== undefined) return known !== null && known.u === owner ? known : undefined
    // Someone else's garbage in awareness is not our error to raise: it is only not shown.
    let opened: { u: string; t: boolean; verified: Promise<boolean> } | undefined
    try {
      const key = this.keyFor(s.e)
      const nonce = fromBase64Url(s.n)
      const c = fromBase64Url(s.c)
      if (key) {
        const parsed = JSON.parse(new TextDecoder().decode(open(key, nonce, c, aadFor(this.room, s.e)))) as { u?: unknown; t?: unknown }
        if (typeof parsed.u === 'string' && typeof parsed.t === 'boolean' && parsed.u === owner) {
          const verified = verifyWithDomain(SignatureDomain.Awareness, fromBase64Url(s.d), signedPart(this.room, s.e, nonce, c), fromBase64Url(s.s))
          opened = { u: parsed.u, t: parsed.t, verified }
        }
      }
    } catch {
      opened = undefined
    }
    if (!opened) {
      this.said.set(state, null)
      return undefined
    }
    this.said.set(state, 'checking')
    const { u, t } = opened
    opened.verified.then(
      (ok) => {
        this.said.set(state, ok ? { u, t } : null)
        this.read()
      },
      () => this.said.set(state, null),
    )
    return { pending: owner }
  }

  destroy(): void {
    this.destroyed = true
    clearTimeout(this.clearTimer)
    clearTimeout(this.expiryTimer)
    this.awareness.off('change', this.onChange)
  }
}
