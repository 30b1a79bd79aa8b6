/**
 * Typing indicators over y-websocket awareness, encrypted with the conversation key: the
 * relay forwards awareness updates it cannot read. A typing flag clears itself after
 * TYPING_TIMEOUT_MS on the sender, and receivers also forget it after that long without a
 * refresh, so a vanished device never types for ever.
 *
 * ```
 * awareness state := { v: 1, e: epoch, n: base64url(nonce24), c: base64url(ciphertext) }
 * plaintext       := JSON { u: userId, t: typing }
 * aad             := varString 'petrel/v1/awareness' • varString room • varUint epoch
 * ```
 */
import * as encoding from 'lib0/encoding'
import type { Awareness } from 'y-protocols/awareness'
import { fromBase64Url, open, randomNonce, seal, toBase64Url } from '../shared/crypto/index.js'

export const TYPING_TIMEOUT_MS = 5_000

const aadFor = (room: string, epoch: number) => {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, 'petrel/v1/awareness')
  encoding.writeVarString(e, room)
  encoding.writeVarUint(e, epoch)
  return encoding.toUint8Array(e)
}

export class Presence {
  /** userId → when we last heard they were typing. */
  private readonly typingSince = new Map<string, number>()
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
    private readonly isMember: (userId: string) => boolean,
  ) {
    this.onChange = () => this.read()
    awareness.on('change', this.onChange)
  }

  setTyping(typing: boolean): void {
    clearTimeout(this.clearTimer)
    const epoch = this.currentEpoch()
    const key = this.keyFor(epoch)
    if (!key) return
    const nonce = randomNonce()
    const plain = new TextEncoder().encode(JSON.stringify({ u: this.userId, t: typing }))
    const c = seal(key, nonce, plain, aadFor(this.room, epoch))
    this.awareness.setLocalState({ v: 1, e: epoch, n: toBase64Url(nonce), c: toBase64Url(c) })
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
    const before = this.typingUsers().join()
    const seen = new Set<string>()
    for (const [clientId, state] of this.awareness.getStates()) {
      if (clientId === this.awareness.clientID) continue
      const parsed = this.decrypt(state)
      if (!parsed || parsed.u === this.userId || !this.isMember(parsed.u)) continue
      seen.add(parsed.u)
      if (parsed.t) this.typingSince.set(parsed.u, Date.now())
      else this.typingSince.delete(parsed.u)
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

  private decrypt(state: unknown): { u: string; t: boolean } | undefined {
    try {
      const s = state as { v?: unknown; e?: unknown; n?: unknown; c?: unknown }
      if (s?.v !== 1 || typeof s.e !== 'number' || typeof s.n !== 'string' || typeof s.c !== 'string') return undefined
      const key = this.keyFor(s.e)
      if (!key) return undefined
      const plain = open(key, fromBase64Url(s.n), fromBase64Url(s.c), aadFor(this.room, s.e))
      const parsed = JSON.parse(new TextDecoder().decode(plain)) as { u?: unknown; t?: unknown }
      if (typeof parsed.u !== 'string' || typeof parsed.t !== 'boolean') return undefined
      return { u: parsed.u, t: parsed.t }
    } catch {
      // Someone else's garbage in awareness is not our error to raise.
      return undefined
    }
  }

  destroy(): void {
    clearTimeout(this.clearTimer)
    clearTimeout(this.expiryTimer)
    this.awareness.off('change', this.onChange)
  }
}
