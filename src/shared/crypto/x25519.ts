import { x25519 } from '@noble/curves/ed25519.js'
import { ErrorCode, PetrelError } from '../errors.js'
import { assertBytesLength, randomBytes } from './hash.js'

/** X25519 public and secret key length in bytes. */
export const X25519_KEY_LENGTH = 32

/** An X25519 key pair used for key agreement (wrapping keys to a device), never for signing. */
export interface AgreementKeyPair {
  /** 32-byte X25519 secret scalar (clamped at use, per RFC 7748). */
  secretKey: Uint8Array
  /** 32-byte X25519 public u-coordinate. */
  publicKey: Uint8Array
}

/**
 * Generates a fresh X25519 key pair from the platform CSPRNG.
 *
 * @example const { secretKey, publicKey } = generateAgreementKeyPair()
 */
export function generateAgreementKeyPair(): AgreementKeyPair {
  const secretKey = randomBytes(X25519_KEY_LENGTH)
  return { secretKey, publicKey: x25519.getPublicKey(secretKey) }
}

/**
 * Derives the X25519 public key for a secret key.
 *
 * @example const pub = agreementPublicKeyFromSecret(secretKey)
 */
export function agreementPublicKeyFromSecret(secretKey: Uint8Array): Uint8Array {
  assertBytesLength(secretKey, X25519_KEY_LENGTH, 'secretKey')
  return x25519.getPublicKey(secretKey)
}

/**
 * X25519 Diffie-Hellman. The result is raw curve output: always feed it through a KDF.
 *
 * Small-order peer keys would force a shared secret known to anyone (all zeros), letting a
 * malicious peer make "encrypted to you" data readable by everybody, so they are rejected —
 * both by noble's low-order blocklist and by an explicit all-zero check in case that changes.
 *
 * @example const shared = sharedSecret(mySecret, theirPublic)
 * @throws PetrelError(EnvelopeRejected) when the peer key is of small order.
 */
export function sharedSecret(secretKey: Uint8Array, peerPublicKey: Uint8Array): Uint8Array {
  assertBytesLength(secretKey, X25519_KEY_LENGTH, 'secretKey')
  assertBytesLength(peerPublicKey, X25519_KEY_LENGTH, 'peerPublicKey')
  let shared: Uint8Array
  try {
    shared = x25519.getSharedSecret(secretKey, peerPublicKey)
  } catch (cause) {
    throw new PetrelError(ErrorCode.EnvelopeRejected, 'X25519 peer public key is of small order', { cause })
  }
  let acc = 0
  for (let i = 0; i < shared.length; i++) acc |= shared[i]!
  if (acc === 0) throw new PetrelError(ErrorCode.EnvelopeRejected, 'X25519 shared secret is all zeros')
  return shared
}
