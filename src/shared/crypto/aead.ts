import { xchacha20poly1305 } from '@noble/ciphers/chacha.js'
import { ErrorCode, PetrelError } from '../errors.js'
import { assertBytes, assertBytesLength, randomBytes } from './hash.js'

/** XChaCha20-Poly1305 key length in bytes. */
export const AEAD_KEY_LENGTH = 32
/** XChaCha20-Poly1305 nonce length in bytes. */
export const AEAD_NONCE_LENGTH = 24
/** Poly1305 tag length in bytes; ciphertext = plaintext length + this. */
export const AEAD_TAG_LENGTH = 16

/**
 * Encrypts and authenticates `plaintext`, binding `aad` (authenticated, not encrypted).
 * Returns ciphertext || 16-byte tag.
 *
 * @example const ct = seal(key, randomNonce(), utf8('hi'), headerBytes)
 */
export function seal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
  assertBytesLength(key, AEAD_KEY_LENGTH, 'key')
  assertBytesLength(nonce, AEAD_NONCE_LENGTH, 'nonce')
  assertBytes(plaintext, 'plaintext')
  assertBytes(aad, 'aad')
  return xchacha20poly1305(key, nonce, aad).encrypt(plaintext)
}

/**
 * Authenticates and decrypts `ciphertext` (ciphertext || tag) sealed with the same key, nonce and aad.
 *
 * @example const pt = open(key, nonce, ct, headerBytes)
 * @throws PetrelError(EnvelopeRejected) when the tag does not verify or the ciphertext is shorter than a tag;
 *   TypeError / RangeError for wrongly typed or sized key/nonce.
 */
export function open(key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, aad: Uint8Array): Uint8Array {
  assertBytesLength(key, AEAD_KEY_LENGTH, 'key')
  assertBytesLength(nonce, AEAD_NONCE_LENGTH, 'nonce')
  assertBytes(ciphertext, 'ciphertext')
  assertBytes(aad, 'aad')
  // A too-short ciphertext is network data failing to authenticate, not a caller bug.
  if (ciphertext.length < AEAD_TAG_LENGTH) {
    throw new PetrelError(ErrorCode.EnvelopeRejected, 'ciphertext is shorter than the authentication tag')
  }
  try {
    return xchacha20poly1305(key, nonce, aad).decrypt(ciphertext)
  } catch (cause) {
    throw new PetrelError(ErrorCode.EnvelopeRejected, 'ciphertext failed authentication', { cause })
  }
}

/**
 * 24 random bytes for use as an XChaCha20-Poly1305 nonce.
 *
 * Random nonces are safe here because XChaCha's nonce is 192 bits: even after 2^64 messages
 * under one key the chance of any collision is about 2^-64, so no counter state has to be kept
 * or synchronised across devices (which a 96-bit ChaCha20 nonce would require).
 *
 * @example const nonce = randomNonce()
 */
export function randomNonce(): Uint8Array {
  return randomBytes(AEAD_NONCE_LENGTH)
}

/**
 * A fresh random 32-byte symmetric key.
 *
 * @example const epochKey = randomKey()
 */
export function randomKey(): Uint8Array {
  return randomBytes(AEAD_KEY_LENGTH)
}
