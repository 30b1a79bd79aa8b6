import { hchacha, xchacha20poly1305 } from '@noble/ciphers/chacha.js'
import { ErrorCode, PetrelError } from '../errors.js'
import { assertBytes, assertBytesLength, randomBytes } from './hash.js'

/** XChaCha20-Poly1305 key length in bytes. */
export const AEAD_KEY_LENGTH = 32
/** XChaCha20-Poly1305 nonce length in bytes. */
export const AEAD_NONCE_LENGTH = 24
/** Poly1305 tag length in bytes; ciphertext = plaintext length + this. */
export const AEAD_TAG_LENGTH = 16

/**
 * Two backends, one construction. XChaCha20-Poly1305 is HChaCha20(key, nonce[0..16]) as the
 * subkey of ChaCha20-Poly1305 (RFC 8439) with the 12-byte nonce 0⁴ • nonce[16..24]
 * (draft-irtf-cfrg-xchacha §2.3). Where the platform has ChaCha20-Poly1305 (Node's OpenSSL),
 * noble derives the subkey and OpenSSL does the bulk: about 2–3× faster per small envelope,
 * which is most of a device's catch-up. Browsers have no ChaCha in WebCrypto and use noble
 * throughout. Both produce the same bytes and refuse the same inputs (tests cross-check).
 */
interface NodeCipher {
  setAAD(aad: Uint8Array, options: { plaintextLength: number }): unknown
  update(data: Uint8Array): Uint8Array
  final(): Uint8Array
  getAuthTag(): Uint8Array
  setAuthTag(tag: Uint8Array): unknown
}
interface NodeCrypto {
  createCipheriv(alg: string, key: Uint8Array, iv: Uint8Array, options: { authTagLength: number }): NodeCipher
  createDecipheriv(alg: string, key: Uint8Array, iv: Uint8Array, options: { authTagLength: number }): NodeCipher
  getCiphers(): string[]
}

// `process.getBuiltinModule` (Node ≥ 20.16) keeps this module free of a static node: import,
// so the browser bundle never sees one.
function loadNodeCrypto(): NodeCrypto | undefined {
  try {
    const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process
    const mod = proc?.getBuiltinModule?.('node:crypto') as NodeCrypto | undefined
    return mod?.getCiphers().includes('chacha20-poly1305') ? mod : undefined
  } catch {
    return undefined
  }
}

const nodeCrypto = loadNodeCrypto()
let useNative = nodeCrypto !== undefined

/** Which backend `seal`/`open` use: 'native' (Node's OpenSSL for the ChaCha20-Poly1305 core) or 'noble'. */
export function aeadBackend(): 'native' | 'noble' {
  return useNative ? 'native' : 'noble'
}

/**
 * Tests only: run `seal`/`open` on one backend. Returns false when 'native' is asked for and
 * the platform has none.
 *
 * @example setAeadBackend('noble'); try { … } finally { setAeadBackend('native') }
 */
export function setAeadBackend(backend: 'native' | 'noble'): boolean {
  if (backend === 'native' && nodeCrypto === undefined) return false
  useNative = backend === 'native'
  return true
}

// "expand 32-byte k", little-endian words.
const SIGMA = new Uint32Array([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574])

// The subkey's derivation works in arrays made once: five made per call were ~1.5 KB of garbage
// for every envelope sealed or opened (a tenth of what a catch-up of 10,000 single-message
// envelopes allocated besides Yjs). Used synchronously only: filled, handed to OpenSSL (which
// copies the key into its cipher context), and wiped before the caller returns.
const keyWords = new Uint32Array(8)
const keyWordBytes = new Uint8Array(keyWords.buffer)
const nonceWords = new Uint32Array(4)
const nonceWordBytes = new Uint8Array(nonceWords.buffer)
const subkeyWords = new Uint32Array(8)
const subkeyBytes = new Uint8Array(subkeyWords.buffer)
const ivBytes = new Uint8Array(12)

/** HChaCha20 of `key` and the nonce's first 16 bytes into `subkeyBytes`, the nonce's last 8 into `ivBytes`; wipe with {@link wipeSubkey}. */
function deriveSubkeyAndIv(key: Uint8Array, nonce: Uint8Array): void {
  keyWordBytes.set(key.subarray(0, 32))
  nonceWordBytes.set(nonce.subarray(0, 16))
  hchacha(SIGMA, keyWords, nonceWords, subkeyWords)
  keyWords.fill(0)
  ivBytes.set(nonce.subarray(16, 24), 4)
}

function wipeSubkey(): void {
  subkeyWords.fill(0)
}

function nativeSealInto(crypto: NodeCrypto, key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array, out: Uint8Array, at: number): void {
  let cipher: NodeCipher
  deriveSubkeyAndIv(key, nonce)
  try {
    cipher = crypto.createCipheriv('chacha20-poly1305', subkeyBytes, ivBytes, { authTagLength: AEAD_TAG_LENGTH })
  } finally {
    wipeSubkey()
  }
  cipher.setAAD(aad, { plaintextLength: plaintext.length })
  out.set(cipher.update(plaintext), at)
  cipher.final()
  out.set(cipher.getAuthTag(), at + plaintext.length)
}

function nativeOpen(crypto: NodeCrypto, key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, aad: Uint8Array): Uint8Array {
  const length = ciphertext.length - AEAD_TAG_LENGTH
  let decipher: NodeCipher
  deriveSubkeyAndIv(key, nonce)
  try {
    decipher = crypto.createDecipheriv('chacha20-poly1305', subkeyBytes, ivBytes, { authTagLength: AEAD_TAG_LENGTH })
  } finally {
    wipeSubkey()
  }
  decipher.setAAD(aad, { plaintextLength: length })
  decipher.setAuthTag(ciphertext.subarray(length))
  const plain = decipher.update(ciphertext.subarray(0, length))
  // final() checks the tag and throws when it does not match: nothing is returned before.
  decipher.final()
  return new Uint8Array(plain.buffer, plain.byteOffset, plain.byteLength)
}

/**
 * Encrypts and authenticates `plaintext`, binding `aad` (authenticated, not encrypted).
 * Returns ciphertext || 16-byte tag.
 *
 * @example const ct = seal(key, randomNonce(), utf8('hi'), headerBytes)
 */
export function seal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
  if (useNative && nodeCrypto) {
    assertBytes(plaintext, 'plaintext')
    const out = new Uint8Array(plaintext.length + AEAD_TAG_LENGTH)
    sealInto(key, nonce, plaintext, aad, out, 0)
    return out
  }
  assertBytesLength(key, AEAD_KEY_LENGTH, 'key')
  assertBytesLength(nonce, AEAD_NONCE_LENGTH, 'nonce')
  assertBytes(plaintext, 'plaintext')
  assertBytes(aad, 'aad')
  return xchacha20poly1305(key, nonce, aad).encrypt(plaintext)
}

/**
 * `seal`, writing ciphertext then tag into `out` at `at` (the same bytes): a caller building a
 * larger layout around the ciphertext (an envelope) saves a copy of it — for a history
 * snapshot's ~1 MB parts, one of the copies that made the sending thread collect garbage.
 *
 * @example
 * ```ts
 * const out = new Uint8Array(head.length + plain.length + AEAD_TAG_LENGTH)
 * sealInto(key, nonce, plain, aad, out, head.length)
 * ```
 */
export function sealInto(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array, out: Uint8Array, at: number): void {
  assertBytesLength(key, AEAD_KEY_LENGTH, 'key')
  assertBytesLength(nonce, AEAD_NONCE_LENGTH, 'nonce')
  assertBytes(plaintext, 'plaintext')
  assertBytes(aad, 'aad')
  assertBytes(out, 'out')
  if (!Number.isSafeInteger(at) || at < 0 || at + plaintext.length + AEAD_TAG_LENGTH > out.length) throw new RangeError('no room in out for the ciphertext and its tag')
  if (useNative && nodeCrypto) nativeSealInto(nodeCrypto, key, nonce, plaintext, aad, out, at)
  else out.set(xchacha20poly1305(key, nonce, aad).encrypt(plaintext), at)
}

/**
 * `seal` for a large plaintext, a step at a time: the same bytes, written into `out` at `at`
 * (ciphertext then tag), with `pause()` awaited between steps so the thread serves others
 * meanwhile. Sealing a 5 MB history snapshot in one call held the thread ~40 ms. Natively the
 * cipher streams; noble's does not, so browsers seal it in one step.
 *
 * @example
 * ```ts
 * const out = new Uint8Array(plain.length + AEAD_TAG_LENGTH)
 * await sealInSteps(key, nonce, plain, aad, out, 0)
 * ```
 */
export async function sealInSteps(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
  out: Uint8Array,
  at: number,
  stepBytes = 256 * 1024,
  pause: () => Promise<unknown> = () => new Promise((r) => setTimeout(r, 0)),
): Promise<void> {
  assertBytesLength(key, AEAD_KEY_LENGTH, 'key')
  assertBytesLength(nonce, AEAD_NONCE_LENGTH, 'nonce')
  assertBytes(plaintext, 'plaintext')
  assertBytes(aad, 'aad')
  if (at < 0 || at + plaintext.length + AEAD_TAG_LENGTH > out.length) throw new RangeError('no room in out for the ciphertext and its tag')
  if (!useNative || !nodeCrypto) {
    out.set(xchacha20poly1305(key, nonce, aad).encrypt(plaintext), at)
    return
  }
  let cipher: NodeCipher
  deriveSubkeyAndIv(key, nonce)
  try {
    cipher = nodeCrypto.createCipheriv('chacha20-poly1305', subkeyBytes, ivBytes, { authTagLength: AEAD_TAG_LENGTH })
  } finally {
    wipeSubkey()
  }
  cipher.setAAD(aad, { plaintextLength: plaintext.length })
  let written = 0
  for (let from = 0; from < plaintext.length; from += stepBytes) {
    if (from > 0) await pause()
    const chunk = cipher.update(plaintext.subarray(from, from + stepBytes))
    out.set(chunk, at + written)
    written += chunk.length
  }
  const rest = cipher.final()
  out.set(rest, at + written)
  written += rest.length
  if (written !== plaintext.length) throw new Error(`the cipher wrote ${written} bytes for ${plaintext.length}`)
  out.set(cipher.getAuthTag(), at + written)
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
    if (useNative && nodeCrypto) return nativeOpen(nodeCrypto, key, nonce, ciphertext, aad)
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
