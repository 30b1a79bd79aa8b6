import { x25519 } from '@noble/curves/ed25519.js'
import { ErrorCode, PetrelError } from '../errors.js'
import { assertBytesLength, bytesToNumberLE, fromHex, randomBytes, toBase64Url } from './hash.js'

/** X25519 public and secret key length in bytes. */
export const X25519_KEY_LENGTH = 32

/** An X25519 key pair used for key agreement (wrapping keys to a device), never for signing. */
export interface AgreementKeyPair {
  /** 32-byte X25519 secret scalar (clamped at use, per RFC 7748). */
  secretKey: Uint8Array
  /** 32-byte X25519 public u-coordinate. */
  publicKey: Uint8Array
}

/** Node's KeyObject, opaque here: nothing is exported from one (see generateAgreementKeyPair). */
type NodeKeyObject = object
interface NodeX25519 {
  createPrivateKey(key: { key: Uint8Array; format: 'der'; type: 'pkcs8' }): NodeKeyObject
  createPublicKey(key: NodeKeyObject | { key: { kty: 'OKP'; crv: 'X25519'; x: string }; format: 'jwk' }): NodeKeyObject
  diffieHellman(options: { privateKey: NodeKeyObject; publicKey: NodeKeyObject }): Uint8Array
}

/** PKCS#8 DER of a raw X25519 secret (RFC 8410): Node imports raw secrets no other way without the public key. */
const PKCS8_PREFIX = Uint8Array.of(0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20)

/**
 * Node's key objects for secrets we made or used, by the secret's array: importing a secret
 * costs ~0.35 ms, a Diffie-Hellman with its key object ~0.04 ms, and the same arrays come back
 * (the device's agreement secret; an ephemeral secret right after it was made).
 */
const keyObjects = new WeakMap<Uint8Array, NodeKeyObject>()

function nativeSecret(node: NodeX25519, secretKey: Uint8Array): NodeKeyObject {
  let key = keyObjects.get(secretKey)
  if (!key) {
    const der = new Uint8Array(PKCS8_PREFIX.length + X25519_KEY_LENGTH)
    der.set(PKCS8_PREFIX)
    der.set(secretKey, PKCS8_PREFIX.length)
    try {
      key = node.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })
    } finally {
      der.fill(0)
    }
    keyObjects.set(secretKey, key)
  }
  return key
}
const nativePublic = (node: NodeX25519, publicKey: Uint8Array) => node.createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: toBase64Url(publicKey) }, format: 'jwk' })
/** u = 9, the X25519 base point: a secret's public key is its agreement with it. */
const BASE_POINT = Uint8Array.of(9, ...new Array<number>(31).fill(0))
let basePoint: NodeKeyObject | undefined
function nativePublicOf(node: NodeX25519, secretKey: Uint8Array): Uint8Array {
  basePoint ??= nativePublic(node, BASE_POINT)
  return new Uint8Array(node.diffieHellman({ privateKey: nativeSecret(node, secretKey), publicKey: basePoint }))
}

/**
 * Node's OpenSSL X25519 where there is one: noble's took ~1 ms an operation, and a key
 * rotation (every 1,000 messages) makes several on the sending device and one on each receiving
 * one, which stalled a busy conversation ~30 ms each time; OpenSSL's takes ~0.1 ms with the key
 * import. Both follow RFC 7748 (the top bit of a public key ignored, values past p reduced) and
 * both refuse an all-zero result, which `sharedSecret` checks again: one acceptance rule on both
 * paths (test/unit/crypto.test.ts compares them). Used only if it gives RFC 7748's §6.1
 * results. `process.getBuiltinModule` keeps the browser bundle free of a node: import.
 */
const nodeX25519 = ((): NodeX25519 | undefined => {
  try {
    const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process
    const node = proc?.getBuiltinModule?.('node:crypto') as NodeX25519 | undefined
    if (!node?.diffieHellman || !node.createPrivateKey || !node.createPublicKey) return undefined
    const alice = fromHex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a')
    const alicePub = fromHex('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a')
    const bobPub = fromHex('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f')
    const shared = fromHex('4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742')
    const ours = node.diffieHellman({ privateKey: nativeSecret(node, alice), publicKey: nativePublic(node, bobPub) })
    const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i])
    return same(nativePublicOf(node, alice), alicePub) && same(ours, shared) ? node : undefined
  } catch {
    return undefined
  }
})()

/** Which X25519 the functions below use: 'node' (OpenSSL) or 'noble' (browsers). */
export const x25519Backend = (): 'node' | 'noble' => (nodeX25519 === undefined ? 'noble' : 'node')

/** @internal Tests only: X25519 through noble, the browsers' path. */
export const sharedSecretNoble = (secretKey: Uint8Array, peerPublicKey: Uint8Array): Uint8Array => x25519.getSharedSecret(secretKey, peerPublicKey)

/**
 * Generates a fresh X25519 key pair from the platform CSPRNG.
 *
 * @example const { secretKey, publicKey } = generateAgreementKeyPair()
 */
export function generateAgreementKeyPair(): AgreementKeyPair {
  // Any 32 random bytes are an X25519 secret (RFC 7748 clamps them when used), and its public
  // key is its agreement with the base point. Not Node's generateKeyPairSync and a JWK export:
  // on Node 20 that deadlocks the thread now and then (the export holds the key's mutex while
  // it allocates, the GC that triggers destroys the finished key-generation job, and the job's
  // destructor takes the same mutex). A loop of generate-and-export hung within its first few
  // thousand pairs; the relay memory benchmark's 10,000 bench devices hung at ~2,600.
  const secretKey = randomBytes(X25519_KEY_LENGTH)
  return { secretKey, publicKey: agreementPublicKeyFromSecret(secretKey) }
}

/**
 * Derives the X25519 public key for a secret key.
 *
 * @example const pub = agreementPublicKeyFromSecret(secretKey)
 */
export function agreementPublicKeyFromSecret(secretKey: Uint8Array): Uint8Array {
  assertBytesLength(secretKey, X25519_KEY_LENGTH, 'secretKey')
  return nodeX25519 === undefined ? x25519.getPublicKey(secretKey) : nativePublicOf(nodeX25519, secretKey)
}

/** p = 2^255 − 19, Curve25519's field. */
const P25519 = 2n ** 255n - 19n
/**
 * The u-coordinates (mod p) of the points of small order on Curve25519 and its twist: 0, 1,
 * p − 1 and the two of order 8. Every scalar multiplication of one gives a result an attacker
 * knows (the all-zero secret `sharedSecret` refuses).
 */
const SMALL_ORDER_U = new Set([0n, 1n, P25519 - 1n, 325606250916557431795983626356110631294008115727848805560023387167927233504n, 39382357235489614581723060781553021112529911719440698176882885853963445705823n])

/**
 * Whether an X25519 public key is of small order: nothing can be wrapped to it (`sharedSecret`
 * refuses it). Read as RFC 7748 reads it: the top bit ignored, a value past p reduced.
 *
 * @example if (isSmallOrderAgreementKey(cert.agreementPub)) refuse('unusable agreement key')
 */
export function isSmallOrderAgreementKey(publicKey: Uint8Array): boolean {
  assertBytesLength(publicKey, X25519_KEY_LENGTH, 'publicKey')
  const u = bytesToNumberLE(publicKey) & ((1n << 255n) - 1n)
  return SMALL_ORDER_U.has(u % P25519)
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
    shared =
      nodeX25519 === undefined
        ? x25519.getSharedSecret(secretKey, peerPublicKey)
        : new Uint8Array(nodeX25519.diffieHellman({ privateKey: nativeSecret(nodeX25519, secretKey), publicKey: nativePublic(nodeX25519, peerPublicKey) }))
  } catch (cause) {
    throw new PetrelError(ErrorCode.EnvelopeRejected, 'X25519 peer public key is of small order', { cause })
  }
  let acc = 0
  for (let i = 0; i < shared.length; i++) acc |= shared[i]!
  if (acc === 0) throw new PetrelError(ErrorCode.EnvelopeRejected, 'X25519 shared secret is all zeros')
  return shared
}
