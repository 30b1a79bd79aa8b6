/**
 * A key bundle: the conversation keys one device is given when it is added to a conversation
 * (a person added by an admin, or a person's newly linked device), readable by that device
 * only. An epoch record wraps one key per device; a bundle carries many (a 'full' history
 * is every epoch's key), so it wraps a fresh bundle key and seals the list under it.
 *
 * ```
 * bundle    := uint8 BUNDLE_VERSION(1) • varUint8Array wrappedBundleKey (wrap.ts, context below)
 *              • varUint8Array nonce(24) • varUint8Array ciphertext
 * context   := varString 'petrel/v1/key-bundle' • varString room • varUint8Array devicePub
 * plaintext := varUint n • { varUint epoch • varUint8Array key(32) }{n}
 * ```
 * The context (also the AEAD's AAD) binds a bundle to its room and device, so one cannot be
 * replayed into another conversation or to another device.
 */
import * as encoding from 'lib0/encoding'
import { open, randomKey, randomNonce, seal, unwrapKey, wrapKey } from './crypto/index.js'
import { ErrorCode, PetrelError } from './errors.js'
import { StrictReader } from './wire.js'

const BUNDLE_VERSION = 1
/** More epochs than a conversation reaches in years of scheduled rotation. */
const MAX_KEYS = 4096

const contextFor = (room: string, devicePub: Uint8Array) => {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, 'petrel/v1/key-bundle')
  encoding.writeVarString(e, room)
  encoding.writeVarUint8Array(e, devicePub)
  return encoding.toUint8Array(e)
}

/**
 * Seal `keys` (epoch → key) for one device.
 *
 * @example
 * ```ts
 * const bundle = sealKeyBundle(conv.keys(), room, cert.devicePub, cert.agreementPub)
 * ```
 */
export function sealKeyBundle(keys: ReadonlyMap<number, Uint8Array>, room: string, devicePub: Uint8Array, agreementPub: Uint8Array): Uint8Array {
  const context = contextFor(room, devicePub)
  const plain = encoding.createEncoder()
  encoding.writeVarUint(plain, keys.size)
  for (const [epoch, key] of keys) {
    encoding.writeVarUint(plain, epoch)
    encoding.writeVarUint8Array(plain, key)
  }
  const bundleKey = randomKey()
  const nonce = randomNonce()
  const e = encoding.createEncoder()
  encoding.writeUint8(e, BUNDLE_VERSION)
  encoding.writeVarUint8Array(e, wrapKey(bundleKey, agreementPub, context))
  encoding.writeVarUint8Array(e, nonce)
  encoding.writeVarUint8Array(e, seal(bundleKey, nonce, encoding.toUint8Array(plain), context))
  bundleKey.fill(0)
  return encoding.toUint8Array(e)
}

/** Open a bundle sealed for this device; a PetrelError (envelope_rejected) when it is not. */
export function openKeyBundle(bundle: Uint8Array, room: string, devicePub: Uint8Array, agreementSecret: Uint8Array): Map<number, Uint8Array> {
  const context = contextFor(room, devicePub)
  const r = new StrictReader(bundle)
  if (r.uint8() !== BUNDLE_VERSION) throw new PetrelError(ErrorCode.VersionMismatch, 'unknown key bundle version')
  const wrapped = r.varBytes(256)
  const nonce = r.varBytes(24)
  const ciphertext = r.varBytes(bundle.length)
  r.end()
  const bundleKey = unwrapKey(wrapped, agreementSecret, context)
  let plain: Uint8Array
  try {
    plain = open(bundleKey, nonce, ciphertext, context)
  } catch (cause) {
    throw new PetrelError(ErrorCode.EnvelopeRejected, 'key bundle does not open', { cause })
  } finally {
    bundleKey.fill(0)
  }
  const p = new StrictReader(plain)
  const n = p.varUint(MAX_KEYS)
  const keys = new Map<number, Uint8Array>()
  for (let i = 0; i < n; i++) {
    const epoch = p.varUint(0xffffffff)
    const key = p.varBytes(32)
    if (key.length !== 32) throw new PetrelError(ErrorCode.EnvelopeRejected, 'key bundle holds a key of the wrong length')
    keys.set(epoch, key)
  }
  p.end()
  return keys
}
