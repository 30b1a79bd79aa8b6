import { ErrorCode, PetrelError } from '../errors.js'
import { AEAD_KEY_LENGTH, AEAD_NONCE_LENGTH, AEAD_TAG_LENGTH, open, randomNonce, seal } from './aead.js'
import { assertBytes, assertBytesLength, concatBytes, hkdf, utf8 } from './hash.js'
import { X25519_KEY_LENGTH, agreementPublicKeyFromSecret, generateAgreementKeyPair, sharedSecret } from './x25519.js'

/** Format version byte at the start of every wrapped key. */
export const WRAP_VERSION = 1
/** Total length of a wrapped 32-byte key: version || ephemeral public key || nonce || ciphertext+tag. */
export const WRAPPED_KEY_LENGTH = 1 + X25519_KEY_LENGTH + AEAD_NONCE_LENGTH + AEAD_KEY_LENGTH + AEAD_TAG_LENGTH

const WRAP_INFO_PREFIX = utf8('petrel/v1/wrap')

// Salt binds both public keys so a wrapped key can't be replayed to a different recipient or
// re-attributed to a different ephemeral key; info binds the caller's context (e.g. conversation
// id and epoch), which is also the AEAD's AAD so a mismatch fails authentication.
function deriveKek(shared: Uint8Array, ephPub: Uint8Array, recipientPub: Uint8Array, context: Uint8Array): Uint8Array {
  return hkdf(shared, concatBytes(ephPub, recipientPub), concatBytes(WRAP_INFO_PREFIX, context), AEAD_KEY_LENGTH)
}

/**
 * Encrypts a 32-byte symmetric key to one recipient device's X25519 public key (ECIES-style,
 * fresh ephemeral key per call). Output: [version=1][ephemeral pub 32][nonce 24][ciphertext+tag 48].
 *
 * @example const wrapped = wrapKey(epochKey, device.agreementPublicKey, utf8(`${conversationId}/${epoch}`))
 * @throws PetrelError(InvalidArgument) when the recipient public key is of small order.
 */
export function wrapKey(key: Uint8Array, recipientPublicKey: Uint8Array, context: Uint8Array): Uint8Array {
  return wrapKeyForAll(key, [recipientPublicKey], context)[0]!
}

/**
 * {@link wrapKey} to each of several recipients, with one ephemeral key for all of them: the
 * same bytes per recipient as `wrapKey` would give had it drawn that ephemeral key, each opened
 * by {@link unwrapKey} alone. A new epoch's key goes to every member device, and one ephemeral
 * key a recipient cost a key generation and a key import each: with Node's OpenSSL a
 * 1,000-device conversation spent 0.51 s of the rotating device's thread at each rotation,
 * 0.06 s now (with noble, one of two scalar multiplications a recipient is saved).
 *
 * Why reusing the ephemeral secret is sound here:
 * - every recipient of one call gets the same key, so a member that chose its own public key
 *   (to learn something of the ephemeral secret) gains nothing it was not sent;
 * - outsiders face a Diffie-Hellman per recipient, as with one ephemeral key each: randomness
 *   re-use across the recipients of one encryption is proven sound for DHIES-style ECIES
 *   (Bellare, Boldyreva and Staddon, "Randomness re-use in multi-recipient encryption
 *   schemes", PKC 2003);
 * - each wrap's key-encryption key comes from its own shared secret, salted with both public
 *   keys (two devices with one agreement key share it, harmlessly: nonces are random per wrap).
 *
 * So: one key per call, never a different plaintext per recipient, and the ephemeral key never
 * kept past the call. Its array is zeroed at the end; on Node the imported key object lives
 * until the array is collected, as for `wrapKey`.
 *
 * @example const wrapped = wrapKeyForAll(epochKey, devices.map((d) => d.agreementPublicKey), utf8(`${conversationId}/${epoch}`))
 * @throws PetrelError(InvalidArgument) when a recipient public key is of small order (nothing is returned then).
 */
export function wrapKeyForAll(key: Uint8Array, recipientPublicKeys: readonly Uint8Array[], context: Uint8Array): Uint8Array[] {
  assertBytesLength(key, AEAD_KEY_LENGTH, 'key')
  for (const pub of recipientPublicKeys) assertBytesLength(pub, X25519_KEY_LENGTH, 'recipientPublicKey')
  assertBytes(context, 'context')
  if (recipientPublicKeys.length === 0) return []
  const eph = generateAgreementKeyPair()
  try {
    return recipientPublicKeys.map((recipientPublicKey) => {
      let shared: Uint8Array
      try {
        shared = sharedSecret(eph.secretKey, recipientPublicKey)
      } catch (cause) {
        throw new PetrelError(ErrorCode.InvalidArgument, 'recipient X25519 public key is unusable (small order)', { cause })
      }
      let kek: Uint8Array | undefined
      try {
        kek = deriveKek(shared, eph.publicKey, recipientPublicKey, context)
        const nonce = randomNonce()
        const ct = seal(kek, nonce, key, context)
        const out = new Uint8Array(WRAPPED_KEY_LENGTH)
        out[0] = WRAP_VERSION
        out.set(eph.publicKey, 1)
        out.set(nonce, 1 + X25519_KEY_LENGTH)
        out.set(ct, 1 + X25519_KEY_LENGTH + AEAD_NONCE_LENGTH)
        return out
      } finally {
        shared.fill(0)
        kek?.fill(0)
      }
    })
  } finally {
    eph.secretKey.fill(0)
  }
}

/**
 * Recovers a key wrapped by {@link wrapKey} or {@link wrapKeyForAll} with this device's X25519 secret key and the same context.
 *
 * @example const epochKey = unwrapKey(wrapped, device.agreementSecretKey, utf8(`${conversationId}/${epoch}`))
 * @throws PetrelError(EnvelopeRejected) on wrong version, wrong length, small-order ephemeral key,
 *   wrong recipient, wrong context or any tampering.
 */
export function unwrapKey(wrapped: Uint8Array, recipientSecretKey: Uint8Array, context: Uint8Array): Uint8Array {
  assertBytes(wrapped, 'wrapped')
  assertBytesLength(recipientSecretKey, X25519_KEY_LENGTH, 'recipientSecretKey')
  assertBytes(context, 'context')
  // Wrapped bytes come off the network, so shape problems are rejections, not caller errors.
  if (wrapped.length !== WRAPPED_KEY_LENGTH) {
    throw new PetrelError(ErrorCode.EnvelopeRejected, `wrapped key must be ${WRAPPED_KEY_LENGTH} bytes, got ${wrapped.length}`)
  }
  if (wrapped[0] !== WRAP_VERSION) {
    throw new PetrelError(ErrorCode.EnvelopeRejected, `unsupported wrapped key version ${wrapped[0]}`)
  }
  const ephPub = wrapped.subarray(1, 1 + X25519_KEY_LENGTH)
  const nonce = wrapped.subarray(1 + X25519_KEY_LENGTH, 1 + X25519_KEY_LENGTH + AEAD_NONCE_LENGTH)
  const ct = wrapped.subarray(1 + X25519_KEY_LENGTH + AEAD_NONCE_LENGTH)
  const shared = sharedSecret(recipientSecretKey, ephPub) // throws EnvelopeRejected for small-order keys
  const kek = deriveKek(shared, ephPub, agreementPublicKeyFromSecret(recipientSecretKey), context)
  shared.fill(0)
  try {
    return open(kek, nonce, ct, context)
  } finally {
    kek.fill(0)
  }
}
