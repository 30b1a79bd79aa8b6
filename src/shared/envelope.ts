/**
 * The sealed envelope: one encrypted, signed inner-doc update, stored as a value of the outer
 * doc's `log` map. The relay sees only these bytes.
 *
 * ```
 * envelope  := uint8 ENVELOPE_VERSION(1) • varUint epoch • varUint8Array keyCheck(8) • varUint8Array senderDevicePub(32)
 *              • varUint8Array nonce(24) • varUint8Array ciphertext • varUint8Array signature(64)
 * aad       := varString 'petrel/v1/envelope' • varString room • varUint epoch • varUint8Array keyCheck
 *              • varUint8Array senderDevicePub
 * keyCheck  := HKDF-SHA256(key, info 'petrel/v1/key-check')[0..8]: names the key without
 *              revealing it, so the relay can refuse an envelope sealed under a key that lost
 *              a race for its epoch number (epoch records carry the same value)
 * signature := Ed25519 by senderDevice, domain 'envelope', over aad • varUint8Array nonce • varUint8Array ciphertext
 * plaintext := uint8 kind • body
 *   kind 1 (inner update)  body := varUint8Array update              one inner Yjs V1 update
 *   kind 2 (snapshot part) body := varUint8Array snapshotId(16) • varUint coversSeq • varUint part
 *                                  • varUint parts • varUint8Array bytes
 *                          the parts, in order, concatenate to one inner Yjs V1 update holding the
 *                          whole inner document as its author had it after relay row coversSeq
 * ```
 * Encrypt-then-sign: a receiver rejects a forged or altered envelope before spending a
 * decryption on it, and the AAD binds room, epoch and sender so an envelope cannot be
 * replayed into another conversation or attributed to another device.
 */
import * as encoding from 'lib0/encoding'
import { AEAD_TAG_LENGTH, constantTimeEqual, ED25519_SIGNATURE_LENGTH, hkdf, open, randomNonce, SignatureDomain, sealInto, sign, signedBytes, verify } from './crypto/index.js'
import { ErrorCode, PetrelError } from './errors.js'
import { putVarUint, varUintLength } from './lib0-strict.js'
import { StrictReader } from './wire.js'

export const ENVELOPE_VERSION = 1
export const PlaintextKind = { InnerUpdate: 1, SnapshotPart: 2 } as const

/** One part of an encrypted snapshot of the inner document (see history compaction). */
export interface SnapshotPart {
  snapshotId: Uint8Array
  coversSeq: number
  part: number
  parts: number
}

export type Opened = { kind: 'update'; update: Uint8Array } | ({ kind: 'snapshot'; bytes: Uint8Array } & SnapshotPart)

export interface EnvelopeHeader {
  epoch: number
  keyCheck: Uint8Array
  senderDevicePub: Uint8Array
  nonce: Uint8Array
  ciphertext: Uint8Array
  signature: Uint8Array
}

const keyChecks = new WeakMap<Uint8Array, Uint8Array>()
const KEY_CHECK_INFO = new TextEncoder().encode('petrel/v1/key-check')

/** A public name for a conversation key (see the grammar above); cached per key array. */
export function keyCheckOf(key: Uint8Array): Uint8Array {
  let check = keyChecks.get(key)
  if (!check) {
    check = hkdf(key, undefined, KEY_CHECK_INFO, 8)
    keyChecks.set(key, check)
  }
  return check
}

// The AAD is the same for every envelope of one sender in one epoch: a device catching up
// builds it for thousands in a row, so the last one is kept (callers never mutate it).
let lastAad: { room: string; epoch: number; keyCheck: Uint8Array; sender: Uint8Array; aad: Uint8Array } | undefined

const aadFor = (room: string, epoch: number, keyCheck: Uint8Array, sender: Uint8Array): Uint8Array => {
  const l = lastAad
  if (l !== undefined && l.room === room && l.epoch === epoch && constantTimeEqual(l.keyCheck, keyCheck) && constantTimeEqual(l.sender, sender)) return l.aad
  const aad = encodeAad(room, epoch, keyCheck, sender)
  lastAad = { room, epoch, keyCheck: new Uint8Array(keyCheck), sender: new Uint8Array(sender), aad }
  return aad
}

const encodeAad = (room: string, epoch: number, keyCheck: Uint8Array, sender: Uint8Array) => {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, 'petrel/v1/envelope')
  encoding.writeVarString(e, room)
  encoding.writeVarUint(e, epoch)
  encoding.writeVarUint8Array(e, keyCheck)
  encoding.writeVarUint8Array(e, sender)
  return encoding.toUint8Array(e)
}

export interface SealInput {
  room: string
  epoch: number
  key: Uint8Array
  senderDevicePub: Uint8Array
  senderDeviceSecret: Uint8Array
  update: Uint8Array
  /** Seal `update` as this part of a snapshot instead of as an inner update. */
  snapshot?: SnapshotPart
  /**
   * Known-answer tests only: a fixed nonce. Never pass one otherwise — a nonce used twice
   * under one key leaks both plaintexts, and receivers refuse the second envelope.
   */
  nonce?: Uint8Array
}

/**
 * Seal one inner update (or snapshot part). Every field is written once into a buffer of its
 * exact size — the plaintext, then the envelope with the ciphertext sealed in place — where
 * lib0's growing encoders copied each ~1 MB snapshot part about nine times over on the sending
 * thread (the garbage that made V8 stop it for full collections, history-replica.ts).
 */
export async function sealEnvelope(input: SealInput): Promise<Uint8Array> {
  const { update, snapshot } = input
  const plain = new Uint8Array(
    1 + (snapshot ? field(snapshot.snapshotId) + varUintLength(snapshot.coversSeq) + varUintLength(snapshot.part) + varUintLength(snapshot.parts) : 0) + field(update),
  )
  let at = 0
  if (snapshot) {
    plain[at++] = PlaintextKind.SnapshotPart
    at = putBytes(plain, at, snapshot.snapshotId)
    at = putVarUint(plain, at, snapshot.coversSeq)
    at = putVarUint(plain, at, snapshot.part)
    at = putVarUint(plain, at, snapshot.parts)
  } else plain[at++] = PlaintextKind.InnerUpdate
  putBytes(plain, at, update)
  const keyCheck = keyCheckOf(input.key)
  const aad = aadFor(input.room, input.epoch, keyCheck, input.senderDevicePub)
  const nonce = input.nonce ?? randomNonce()
  const ciphertextLength = plain.length + AEAD_TAG_LENGTH
  const head = 1 + varUintLength(input.epoch) + field(keyCheck) + field(input.senderDevicePub) + field(nonce) + varUintLength(ciphertextLength)
  const out = new Uint8Array(head + ciphertextLength + 1 + ED25519_SIGNATURE_LENGTH)
  out[0] = ENVELOPE_VERSION
  at = putVarUint(out, 1, input.epoch)
  at = putBytes(out, at, keyCheck)
  at = putBytes(out, at, input.senderDevicePub)
  at = putBytes(out, at, nonce)
  at = putVarUint(out, at, ciphertextLength)
  sealInto(input.key, nonce, plain, aad, out, at)
  const ciphertext = out.subarray(at, at + ciphertextLength)
  const signature = await sign(input.senderDeviceSecret, signedEnvelopeBytes(input.room, { epoch: input.epoch, keyCheck, senderDevicePub: input.senderDevicePub, nonce, ciphertext }))
  putBytes(out, at + ciphertextLength, signature)
  return out
}

/** The size of `varUint length • bytes`. */
const field = (bytes: Uint8Array): number => varUintLength(bytes.length) + bytes.length

/** `varUint length • bytes` at `at`; returns the end. */
const putBytes = (out: Uint8Array, at: number, bytes: Uint8Array): number => {
  const from = putVarUint(out, at, bytes.length)
  out.set(bytes, from)
  return from + bytes.length
}

/** Parse the envelope's header without any crypto; throws PetrelError on malformed bytes. */
export function readEnvelope(bytes: Uint8Array): EnvelopeHeader {
  const r = new StrictReader(bytes)
  const version = r.uint8()
  if (version !== ENVELOPE_VERSION) throw new PetrelError(ErrorCode.VersionMismatch, `envelope version ${version} is not supported`)
  const epoch = r.varUint(0xffffffff)
  const keyCheck = r.varBytes(8)
  const senderDevicePub = r.varBytes(32)
  const nonce = r.varBytes(24)
  const ciphertext = r.varBytes(bytes.length)
  const signature = r.varBytes(64)
  r.end()
  if (keyCheck.length !== 8 || senderDevicePub.length !== 32 || nonce.length !== 24 || signature.length !== 64 || ciphertext.length < 16) {
    throw new PetrelError(ErrorCode.Malformed, 'envelope field has the wrong length')
  }
  return { epoch, keyCheck, senderDevicePub, nonce, ciphertext, signature }
}

/** Verify the sender's signature over the envelope. */
export function verifyEnvelope(room: string, h: EnvelopeHeader): Promise<boolean> {
  return verify(h.senderDevicePub, signedEnvelopeBytes(room, h), h.signature)
}

/** Decrypt a verified envelope; returns the inner update. Throws PetrelError(envelope_rejected). */
export function decryptEnvelope(room: string, h: EnvelopeHeader, key: Uint8Array): Uint8Array {
  const opened = openEnvelope(room, h, key)
  if (opened.kind !== 'update') throw new PetrelError(ErrorCode.EnvelopeRejected, 'envelope holds a snapshot part, not an update')
  return opened.update
}

/** Decrypt a verified envelope: an inner update or a snapshot part. Throws PetrelError(envelope_rejected). */
export function openEnvelope(room: string, h: EnvelopeHeader, key: Uint8Array): Opened {
  const plain = open(key, h.nonce, h.ciphertext, aadFor(room, h.epoch, h.keyCheck, h.senderDevicePub))
  const r = new StrictReader(plain)
  const kind = r.uint8()
  if (kind === PlaintextKind.InnerUpdate) {
    const update = r.varBytes(plain.length)
    r.end()
    return { kind: 'update', update }
  }
  if (kind !== PlaintextKind.SnapshotPart) throw new PetrelError(ErrorCode.EnvelopeRejected, `unknown plaintext kind ${kind}`)
  const snapshotId = r.varBytes(16)
  const coversSeq = r.varUint()
  const part = r.varUint(100_000)
  const parts = r.varUint(100_000)
  const bytes = r.varBytes(plain.length)
  r.end()
  if (snapshotId.length !== 16 || part >= parts) throw new PetrelError(ErrorCode.Malformed, 'snapshot part is malformed')
  return { kind: 'snapshot', snapshotId, coversSeq, part, parts, bytes }
}

/** `utf8('petrel/v1/envelope') • 0x00`: the domain prefix `signedBytes` puts before every envelope's signed part. */
const ENVELOPE_PREFIX = signedBytes(SignatureDomain.Envelope, new Uint8Array(0))

/**
 * The exact bytes the envelope signature covers, domain prefix included (for batch
 * verification): the same bytes as `signedBytes(Envelope, aad • varUint8Array nonce • varUint8Array ciphertext)`,
 * built in one allocation — on catch-up the three copies of every ciphertext were 7 % of the time.
 */
export function signedEnvelopeBytes(room: string, h: Omit<EnvelopeHeader, 'signature'>): Uint8Array {
  const aad = aadFor(room, h.epoch, h.keyCheck, h.senderDevicePub)
  const size =
    ENVELOPE_PREFIX.length + aad.length + varUintLength(h.nonce.length) + h.nonce.length + varUintLength(h.ciphertext.length) + h.ciphertext.length
  const out = new Uint8Array(size)
  out.set(ENVELOPE_PREFIX)
  let at = ENVELOPE_PREFIX.length
  out.set(aad, at)
  at = putVarUint(out, at + aad.length, h.nonce.length)
  out.set(h.nonce, at)
  at = putVarUint(out, at + h.nonce.length, h.ciphertext.length)
  out.set(h.ciphertext, at)
  return out
}
