/**
 * Linking a new device to a person, through the relay's link mailbox (two slots of small
 * opaque blobs, see src/relay/link-mailbox.ts). The device that holds the identity key shows
 * a payload (a link or QR code) carrying a one-time secret; the new device sends its public
 * keys, sealed under a key derived from that secret; the old device answers with a
 * certificate for them, sealed the same way. The relay sees only the mailbox id (a hash of
 * the secret) and ciphertext, so it can neither read the exchange nor put its own keys in it.
 *
 * ```
 * payload   := 'petrel-link:' • base64url( uint8 1 • varUint8Array secret(32) • varUint expiresAt )
 * mailbox   := base64url(sha256(varString 'petrel/v1/link-id' • secret))      the relay's name for it
 * key       := HKDF-SHA256(secret, info 'petrel/v1/link-key', 32)
 * message   := uint8 1 • varUint8Array nonce(24) • varUint8Array ciphertext   XChaCha20-Poly1305 under key,
 *              AAD varString 'petrel/v1/link' • varString mailbox • uint8 slot
 * offer  (slot 0, new device → old) := varUint8Array devicePub • varUint8Array agreementPub
 * answer (slot 1, old device → new) := varUint8Array certificate • varUint n • { varUint8Array siblingCertificate }{n}
 *                                      • varString name (the person's display name) • varString primaryDeviceId
 * ```
 * One-time: the old device takes the first offer that opens and stops listening; a second
 * use of the payload finds nobody to answer it.
 */
import * as encoding from 'lib0/encoding'
import { fromBase64Url, hkdf, open, randomBytes, randomNonce, seal, sha256, toBase64Url } from '../shared/crypto/index.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { type DeviceCertificate, readCertificate } from '../shared/records.js'
import { readCapped } from '../shared/read-capped.js'
import { StrictReader } from '../shared/wire.js'

const PREFIX = 'petrel-link:'
const VERSION = 1
export const LinkSlot = { Offer: 0, Answer: 1 } as const
/** How long a link payload works by default. */
export const LINK_TTL_MS = 10 * 60_000
/** One long poll; the relay caps it too. */
const POLL_MS = 20_000

export interface LinkSecret {
  secret: Uint8Array
  expiresAt: number
  mailbox: string
  key: Uint8Array
}

const invalid = (m: string, cause?: unknown) => new PetrelError(ErrorCode.InvalidArgument, `not a device link: ${m}`, { cause })

function derive(secret: Uint8Array, expiresAt: number): LinkSecret {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, 'petrel/v1/link-id')
  encoding.writeVarUint8Array(e, secret)
  return { secret, expiresAt, mailbox: toBase64Url(sha256(encoding.toUint8Array(e))), key: hkdf(secret, undefined, new TextEncoder().encode('petrel/v1/link-key'), 32) }
}

export function newLinkSecret(ttlMs = LINK_TTL_MS): LinkSecret {
  return derive(randomBytes(32), Date.now() + ttlMs)
}

export function encodeLinkPayload(link: LinkSecret): string {
  const e = encoding.createEncoder()
  encoding.writeUint8(e, VERSION)
  encoding.writeVarUint8Array(e, link.secret)
  encoding.writeVarUint(e, link.expiresAt)
  return PREFIX + toBase64Url(encoding.toUint8Array(e))
}

export function decodeLinkPayload(text: string): LinkSecret {
  if (typeof text !== 'string' || !text.startsWith(PREFIX)) throw invalid(`it must start with ${PREFIX}`)
  try {
    const r = new StrictReader(fromBase64Url(text.slice(PREFIX.length)))
    if (r.uint8() !== VERSION) throw invalid('unknown version')
    const secret = r.varBytes(32)
    const expiresAt = r.varUint()
    r.end()
    if (secret.length !== 32) throw invalid('bad secret')
    return derive(secret, expiresAt)
  } catch (err) {
    if (err instanceof PetrelError && err.code === ErrorCode.InvalidArgument) throw err
    throw invalid('malformed', err)
  }
}

const aadFor = (mailbox: string, slot: number) => {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, 'petrel/v1/link')
  encoding.writeVarString(e, mailbox)
  encoding.writeUint8(e, slot)
  return encoding.toUint8Array(e)
}

export function sealLinkMessage(link: LinkSecret, slot: number, plaintext: Uint8Array): Uint8Array {
  const nonce = randomNonce()
  const e = encoding.createEncoder()
  encoding.writeUint8(e, VERSION)
  encoding.writeVarUint8Array(e, nonce)
  encoding.writeVarUint8Array(e, seal(link.key, nonce, plaintext, aadFor(link.mailbox, slot)))
  return encoding.toUint8Array(e)
}

/** Open a mailbox message; undefined when it was not sealed with this link's secret. */
export function openLinkMessage(link: LinkSecret, slot: number, bytes: Uint8Array): Uint8Array | undefined {
  try {
    const r = new StrictReader(bytes)
    if (r.uint8() !== VERSION) return undefined
    const nonce = r.varBytes(24)
    const ciphertext = r.varBytes(bytes.length)
    r.end()
    return open(link.key, nonce, ciphertext, aadFor(link.mailbox, slot))
  } catch {
    return undefined
  }
}

export function encodeOffer(devicePub: Uint8Array, agreementPub: Uint8Array): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint8Array(e, devicePub)
  encoding.writeVarUint8Array(e, agreementPub)
  return encoding.toUint8Array(e)
}

export function readOffer(bytes: Uint8Array): { devicePub: Uint8Array; agreementPub: Uint8Array } {
  const r = new StrictReader(bytes)
  const devicePub = r.varBytes(32)
  const agreementPub = r.varBytes(32)
  r.end()
  if (devicePub.length !== 32 || agreementPub.length !== 32) throw new PetrelError(ErrorCode.Malformed, 'link offer keys must be 32 bytes')
  return { devicePub, agreementPub }
}

export interface LinkAnswer {
  certificate: DeviceCertificate
  siblings: DeviceCertificate[]
  name: string
  primary: string
}

/** At most this many siblings fit the mailbox's 8 KiB with room to spare. */
export const MAX_LINK_SIBLINGS = 32

/**
 * A link message read from the relay at most: what a device writes is a few KiB (the relay's
 * own limit is 8 KiB unless set otherwise); this bounds what a dishonest relay can send.
 */
export const MAX_LINK_MESSAGE_BYTES = 64 * 1024

export function encodeAnswer(certificate: Uint8Array, siblings: DeviceCertificate[], name: string, primary: string): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint8Array(e, certificate)
  const listed = siblings.slice(0, MAX_LINK_SIBLINGS)
  encoding.writeVarUint(e, listed.length)
  for (const s of listed) encoding.writeVarUint8Array(e, s.bytes)
  encoding.writeVarString(e, name.slice(0, 256))
  encoding.writeVarString(e, primary)
  return encoding.toUint8Array(e)
}

export function readAnswer(bytes: Uint8Array): LinkAnswer {
  const r = new StrictReader(bytes)
  const certificate = readCertificate(r.varBytes(1024))
  const n = r.varUint(MAX_LINK_SIBLINGS)
  const siblings: DeviceCertificate[] = []
  for (let i = 0; i < n; i++) siblings.push(readCertificate(r.varBytes(1024)))
  const name = r.varString(1024)
  const primary = r.varString(64)
  r.end()
  return { certificate, siblings, name, primary }
}

/** ws://host/x → http://host, wss:// → https:// (the mailbox is plain HTTP on the relay). */
export const httpBaseOf = (relayUrl: string): string => {
  const u = new URL(relayUrl)
  return `${u.protocol === 'wss:' ? 'https:' : 'http:'}//${u.host}`
}

/** The relay's mailbox over HTTP, trying each relay URL in turn. */
export class LinkMailbox {
  constructor(private readonly relays: string[]) {}

  async put(mailbox: string, slot: number, bytes: Uint8Array): Promise<void> {
    const res = await this.request(mailbox, slot, { method: 'PUT', body: bytes as BodyInit, headers: { 'Content-Type': 'application/octet-stream' } })
    if (res.status === 409) throw new PetrelError(ErrorCode.LinkFailed, 'this device link was already used')
    if (!res.ok) throw new PetrelError(ErrorCode.LinkFailed, `relay refused the link message (HTTP ${res.status})`)
  }

  /**
   * Wait for a message in a slot until `deadline` (ms since epoch); undefined when none came.
   * `keep`: read it and leave it there (the relay frees the slot when it expires).
   */
  async take(mailbox: string, slot: number, deadline: number, signal?: AbortSignal, keep = false): Promise<Uint8Array | undefined> {
    while (Date.now() < deadline && !signal?.aborted) {
      const wait = Math.max(0, Math.min(POLL_MS, deadline - Date.now()))
      let res: Response
      try {
        res = await this.request(mailbox, slot, { method: 'GET', signal }, `?wait=${wait}${keep ? '&keep=1' : ''}`)
      } catch (err) {
        if (signal?.aborted) return undefined
        // Offline for a moment: the link stays valid until it expires.
        await new Promise((r) => setTimeout(r, 1000))
        if (Date.now() >= deadline) throw err
        continue
      }
      if (res.status === 200) {
        // The relay is untrusted: an endless body must not fill this device's memory.
        const body = await readCapped(res.body, MAX_LINK_MESSAGE_BYTES)
        if (body === 'too-large') throw new PetrelError(ErrorCode.LinkFailed, `the relay's link message is over ${MAX_LINK_MESSAGE_BYTES} bytes`)
        return body
      }
      if (res.status !== 204) throw new PetrelError(ErrorCode.LinkFailed, `relay refused the link mailbox (HTTP ${res.status})`)
    }
    return undefined
  }

  private async request(mailbox: string, slot: number, init: RequestInit, query = ''): Promise<Response> {
    let last: unknown
    for (const relay of this.relays) {
      try {
        return await fetch(`${httpBaseOf(relay)}/v1/link/${mailbox}/${slot}${query}`, init)
      } catch (err) {
        if (init.signal?.aborted) throw err
        last = err
      }
    }
    throw new PetrelError(ErrorCode.LinkFailed, 'cannot reach the relay for the device link', { cause: last })
  }
}
