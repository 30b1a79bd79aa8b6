/**
 * Ed25519 with ONE acceptance rule on every code path.
 *
 * The rule (a signature `R || S` on message `M` under public key `A` is valid iff):
 *  1. the signature is 64 bytes and the public key 32 bytes;
 *  2. `S < L` (canonical scalar);
 *  3. `A` is a canonical encoding (y < p; x = 0 only with the sign bit clear), decodes to a point,
 *     is not of small order and is torsion-free (`[L]A = O`);
 *  4. `R` is a canonical encoding (same two conditions);
 *  5. the cofactorless equation holds, checked as bytes: `encode([S]B − [k]A) == R`,
 *     with `k = SHA-512(R || A || M) mod L`.
 *
 * Why: group state is decided independently on every device. If two devices could disagree on
 * whether one signature is valid, a malicious member could craft a signature that only some of them
 * accept and split the group's view. Noble's default verifier (ZIP-215: cofactored, lenient
 * encodings) and WebCrypto/OpenSSL (cofactorless, strict S, raw key import with no checks) disagree
 * on exactly such inputs. Checks 2–4 run in JavaScript before either backend sees the input, and
 * both backends then evaluate the same cofactorless byte comparison, so they agree everywhere.
 * A one-time self-test confirms the native backend really is cofactorless before it is trusted.
 * In Node, OpenSSL is reached two ways: WebCrypto (asynchronous, on the thread pool: catch-ups)
 * and `crypto.verify` (synchronous: a few signatures of live traffic); each passes the self-test.
 */
import type { EdwardsPoint } from '@noble/curves/abstract/edwards.js'
import { ed25519 } from '@noble/curves/ed25519.js'
import { sha512 } from '@noble/hashes/sha2.js'
import { assertBytes, bytesToNumberLE, concatBytes, constantTimeEqual, fromHex, randomBytes, toHex, utf8 } from './hash.js'

/** Ed25519 secret key (seed) length in bytes. */
export const ED25519_SECRET_KEY_LENGTH = 32
/** Ed25519 public key length in bytes. */
export const ED25519_PUBLIC_KEY_LENGTH = 32
/** Ed25519 signature length in bytes. */
export const ED25519_SIGNATURE_LENGTH = 64

const Point = ed25519.Point
const L = Point.Fn.ORDER
const P = Point.Fp.ORDER

/** An Ed25519 signing key pair. */
export interface SigningKeyPair {
  /** 32-byte seed (RFC 8032 "private key"). */
  secretKey: Uint8Array
  /** 32-byte encoded public key. */
  publicKey: Uint8Array
}

// Typed as ArrayBuffer-backed so it is a valid WebCrypto BufferSource (SharedArrayBuffer views are not),
// and owned by us so caller mutation during an await can't change what gets verified.
function ownCopy(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(bytes)
}

function assertSecretKey(secretKey: unknown): asserts secretKey is Uint8Array {
  assertBytes(secretKey, 'secretKey')
  if (secretKey.length !== ED25519_SECRET_KEY_LENGTH) {
    throw new RangeError(`secretKey must be ${ED25519_SECRET_KEY_LENGTH} bytes, got ${secretKey.length}`)
  }
}

// 32-byte little-endian encodings of the bounds, built once from the bigints: the checks below
// compare bytes, most significant first. Building two 32-byte bigints per signature instead cost
// 5.4 µs a verify, on the thread that asked (0.3 µs now).
function littleEndian32(n: bigint): Uint8Array {
  const out = new Uint8Array(32)
  for (let i = 0; i < 32; i++, n >>= 8n) out[i] = Number(n & 0xffn)
  return out
}
const L_LE = littleEndian32(L)
const P_LE = littleEndian32(P)
const P_MINUS_1_LE = littleEndian32(P - 1n)
const ONE_LE = littleEndian32(1n)

/** `bytes` (with bit 255 cleared when `dropSign`) compared to `bound`, both little-endian: −1, 0 or 1. */
function compareLE(bytes: Uint8Array, bound: Uint8Array, dropSign: boolean): number {
  for (let i = 31; i >= 0; i--) {
    const b = i === 31 && dropSign ? bytes[i]! & 0x7f : bytes[i]!
    if (b !== bound[i]) return b < bound[i]! ? -1 : 1
  }
  return 0
}

/**
 * Rule 4's encoding half: the 32 bytes encode y < p, and the two points with x = 0 (y = 1 and
 * y = p − 1) only with the sign bit clear. Found without a square root: whether the bytes are on
 * the curve at all is left to the equation, which an off-curve R can never satisfy.
 *
 * @example isCanonicalPointEncoding(signature.subarray(0, 32)) // false for y ≥ p
 * @returns false for anything but 32 bytes.
 * @throws TypeError when `bytes` is not a Uint8Array.
 */
export function isCanonicalPointEncoding(bytes: Uint8Array): boolean {
  assertBytes(bytes, 'bytes')
  return bytes.length === 32 && canonicalPointEncoding(bytes)
}

function canonicalPointEncoding(bytes: Uint8Array): boolean {
  if (compareLE(bytes, P_LE, true) >= 0) return false
  if (bytes[31]! & 0x80 && (compareLE(bytes, ONE_LE, true) === 0 || compareLE(bytes, P_MINUS_1_LE, true) === 0)) return false
  return true
}

/**
 * Rule 2: the 32 little-endian bytes are a scalar below the group order L.
 *
 * @example isCanonicalScalar(signature.subarray(32)) // false for S ≥ L
 * @returns false for anything but 32 bytes.
 * @throws TypeError when `bytes` is not a Uint8Array.
 */
export function isCanonicalScalar(bytes: Uint8Array): boolean {
  assertBytes(bytes, 'bytes')
  return bytes.length === 32 && canonicalScalar(bytes)
}

function canonicalScalar(bytes: Uint8Array): boolean {
  return compareLE(bytes, L_LE, false) < 0
}

// Rule 3. Returns the decoded point so the noble path does not decode twice.
function decodeStrictPublicKey(publicKey: Uint8Array): EdwardsPoint | null {
  if (!isCanonicalPointEncoding(publicKey)) return null
  let A: EdwardsPoint
  try {
    A = Point.fromBytes(publicKey, false)
  } catch {
    return null
  }
  // Re-encoding guards canonicality independently of noble's decoder options.
  if (!constantTimeEqual(A.toBytes(), publicKey)) return null
  if (A.isSmallOrder() || !A.isTorsionFree()) return null
  return A
}

interface KeyEntry {
  readonly id: string
  /** Decoded key if it satisfies rule 3, otherwise null (negative results are cached too). */
  readonly point: EdwardsPoint | null
  /** Imported WebCrypto key, once the import has finished. */
  native: CryptoKey | undefined
  nativePending: Promise<CryptoKey> | undefined
  /** Node's key object for synchronous verification, once made. */
  nodeKey?: NodeKeyObject
}

/** Upper bound on cached public keys (~3 KiB each with the imported key): a device sees far fewer; a relay sees every connecting device, so the bound keeps its memory flat. */
export const PUBLIC_KEY_CACHE_LIMIT = 1_024
const keyCache = new Map<string, KeyEntry>()

// LRU via Map insertion order: a hit is moved to the back, overflow evicts from the front.
// A run of checks is nearly always for one sender: compare its bytes before building a hex key.
let lastKey: { bytes: Uint8Array; entry: KeyEntry } | undefined

function keyEntry(publicKey: Uint8Array): KeyEntry {
  if (lastKey !== undefined && constantTimeEqual(lastKey.bytes, publicKey) && keyCache.has(lastKey.entry.id)) return lastKey.entry
  const entry = keyEntryByHex(publicKey)
  lastKey = { bytes: new Uint8Array(publicKey), entry }
  return entry
}

function keyEntryByHex(publicKey: Uint8Array): KeyEntry {
  const id = toHex(publicKey)
  let entry = keyCache.get(id)
  if (entry !== undefined) {
    keyCache.delete(id)
    keyCache.set(id, entry)
    return entry
  }
  entry = { id, point: decodeStrictPublicKey(publicKey), native: undefined, nativePending: undefined }
  keyCache.set(id, entry)
  if (keyCache.size > PUBLIC_KEY_CACHE_LIMIT) {
    const oldest = keyCache.keys().next()
    if (oldest.done !== true) keyCache.delete(oldest.value)
  }
  return entry
}

/**
 * True when `publicKey` satisfies the public-key part of the acceptance rule (canonical, on the curve,
 * not small-order, torsion-free). Use it to refuse bad device keys when they are first introduced,
 * rather than discovering later that nothing signed by them ever verifies.
 *
 * @example if (!isValidSigningPublicKey(cert.signingKey)) throw new PetrelError(ErrorCode.Malformed, 'bad key')
 */
export function isValidSigningPublicKey(publicKey: Uint8Array): boolean {
  assertBytes(publicKey, 'publicKey')
  if (publicKey.length !== ED25519_PUBLIC_KEY_LENGTH) return false
  return keyEntry(publicKey).point !== null
}

// Rules 1–4. Returns the key entry when the remaining question is only the equation (rule 5).
function precheck(publicKey: Uint8Array, signature: Uint8Array): KeyEntry | null {
  if (publicKey.length !== ED25519_PUBLIC_KEY_LENGTH || signature.length !== ED25519_SIGNATURE_LENGTH) return null
  if (!canonicalScalar(signature.subarray(32))) return null
  if (!canonicalPointEncoding(signature.subarray(0, 32))) return null
  const entry = keyEntry(publicKey)
  return entry.point === null ? null : entry
}

// Rule 5, evaluated with noble's point arithmetic (public data only, so variable-time is fine).
function cofactorlessEquation(A: EdwardsPoint, publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  const R = signature.subarray(0, 32)
  const S = bytesToNumberLE(signature.subarray(32, 64))
  const k = Point.Fn.create(bytesToNumberLE(sha512.create().update(R).update(publicKey).update(message).digest()))
  const check = Point.BASE.multiplyUnsafe(S).subtract(A.multiplyUnsafe(k)).toBytes()
  return constantTimeEqual(check, R)
}

/**
 * Verifies with noble point arithmetic only (synchronous). Same answer as {@link verifyWithNative}
 * on every input; exported so tests can run both backends on the same vectors.
 *
 * @example const ok = verifyWithNoble(publicKey, message, signature)
 * @returns false for any signature/key that breaks the acceptance rule, including wrong lengths.
 * @throws TypeError only when an argument is not a Uint8Array.
 */
export function verifyWithNoble(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  assertBytes(publicKey, 'publicKey')
  assertBytes(message, 'message')
  assertBytes(signature, 'signature')
  const entry = precheck(publicKey, signature)
  if (entry === null || entry.point === null) return false
  return cofactorlessEquation(entry.point, publicKey, message, signature)
}

type Subtle = SubtleCrypto

function getSubtle(): Subtle | undefined {
  const c = (globalThis as { crypto?: Crypto }).crypto
  const subtle = c?.subtle
  return subtle !== undefined && typeof subtle.verify === 'function' && typeof subtle.importKey === 'function'
    ? subtle
    : undefined
}

const ED25519_ALG = { name: 'Ed25519' } as const

// RFC 8032 §7.1 TEST 1 (empty message), used for the native self-tests.
const PROBE_SECRET = fromHex('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60')
const PROBE_PUBLIC = fromHex('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a')
const PROBE_VALID = fromHex(
  'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
)
// Same key and message, R = [r]B + T8 (order-8 torsion) with S = r + k·a: valid under the cofactored
// equation only. A backend accepting it would disagree with the rule.
const PROBE_TORSION_R = fromHex(
  'ef8779841cb0aa4ef02c7cf4fa9b13ec63f861ae31b0bbd4233453de543fcb64574571a53e8dbe898ab8e937a7ed321f9a5d287c04227df1b6fd9bdca9e42101',
)
// Same key and message, R = identity with S = k·a: the rule accepts it, but libsodium-style verifiers
// reject small-order R. A backend rejecting it would disagree with the rule.
const PROBE_IDENTITY_R = fromHex(
  '0100000000000000000000000000000000000000000000000000000000000000756cf9b1d6f0d7a979b9d2af3dc2bc1294ec7cb6daa20eaff534c024fc57920f',
)
const PKCS8_ED25519_PREFIX = fromHex('302e020100300506032b657004220420')

let nativeVerifyState: boolean | undefined
let nativeVerifyProbe: Promise<boolean> | undefined
let nativeSignState: boolean | undefined
let nativeSignProbe: Promise<boolean> | undefined

async function probeNativeVerify(): Promise<boolean> {
  const subtle = getSubtle()
  if (subtle === undefined) return false
  try {
    const key = await subtle.importKey('raw', ownCopy(PROBE_PUBLIC), ED25519_ALG, false, ['verify'])
    const empty = new Uint8Array(0)
    const [valid, torsion, identity] = await Promise.all([
      subtle.verify(ED25519_ALG, key, ownCopy(PROBE_VALID), empty),
      subtle.verify(ED25519_ALG, key, ownCopy(PROBE_TORSION_R), empty),
      subtle.verify(ED25519_ALG, key, ownCopy(PROBE_IDENTITY_R), empty),
    ])
    return valid && !torsion && identity
  } catch {
    return false
  }
}

/**
 * Whether the native WebCrypto Ed25519 verifier is present and passes the acceptance-rule self-test.
 * Probed once; afterwards the answer is fixed (and flips to false for good if native ever fails).
 *
 * @example if (await nativeVerifyAvailable()) console.log('using WebCrypto Ed25519')
 */
export async function nativeVerifyAvailable(): Promise<boolean> {
  if (nativeVerifyState !== undefined) return nativeVerifyState
  nativeVerifyProbe ??= probeNativeVerify()
  const ok = await nativeVerifyProbe
  nativeVerifyState ??= ok
  return nativeVerifyState
}

function nativeKey(subtle: Subtle, entry: KeyEntry, publicKey: Uint8Array): CryptoKey | Promise<CryptoKey> {
  if (entry.native !== undefined) return entry.native
  if (entry.nativePending === undefined) {
    const pending = subtle.importKey('raw', ownCopy(publicKey), ED25519_ALG, false, ['verify'])
    entry.nativePending = pending
    pending.then(
      (key) => {
        entry.native = key
      },
      () => {
        // Don't cache a failure: the caller decides whether to fall back.
        if (entry.nativePending === pending) entry.nativePending = undefined
      },
    )
  }
  return entry.nativePending
}

async function nativeEquation(
  entry: KeyEntry,
  publicKey: Uint8Array,
  message: Uint8Array<ArrayBuffer>,
  signature: Uint8Array<ArrayBuffer>,
): Promise<boolean> {
  const subtle = getSubtle()
  if (subtle === undefined) throw new Error('WebCrypto is unavailable')
  const key = await nativeKey(subtle, entry, publicKey)
  return subtle.verify(ED25519_ALG, key, signature, message)
}

/**
 * Verifies with the native WebCrypto Ed25519 backend, after the same JavaScript prechecks as
 * {@link verifyWithNoble}. Exported so tests can compare backends; apps should call {@link verify}.
 *
 * @example const ok = await verifyWithNative(publicKey, message, signature)
 * @returns false for any signature/key that breaks the acceptance rule, including wrong lengths.
 * @throws TypeError when an argument is not a Uint8Array; Error when an input passes the prechecks but
 *   WebCrypto Ed25519 is missing, fails its self-test, or fails to import the key.
 */
export async function verifyWithNative(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): Promise<boolean> {
  assertBytes(publicKey, 'publicKey')
  assertBytes(message, 'message')
  assertBytes(signature, 'signature')
  const entry = precheck(publicKey, signature)
  if (entry === null) return false
  const msg = ownCopy(message)
  const sig = ownCopy(signature)
  const pk = ownCopy(publicKey)
  if (!(await nativeVerifyAvailable())) {
    throw new Error('WebCrypto Ed25519 is unavailable or does not follow the acceptance rule here')
  }
  return nativeEquation(entry, pk, msg, sig)
}

// `message` must already be a private copy (or not awaited over) — see verify().
async function verifyOwned(publicKey: Uint8Array, message: Uint8Array<ArrayBuffer>, signature: Uint8Array<ArrayBuffer>, sync: boolean): Promise<boolean> {
  const entry = precheck(publicKey, signature)
  if (entry === null || entry.point === null) return false
  const now = sync ? nodeVerifyNow(entry, publicKey, message, signature) : undefined
  if (now !== undefined) return now
  if (nativeVerifyState ?? (await nativeVerifyAvailable())) {
    try {
      return await nativeEquation(entry, publicKey, message, signature)
    } catch {
      // Native broke after passing its self-test; noble computes the same rule, so switch for good.
      nativeVerifyState = false
    }
  }
  return cofactorlessEquation(entry.point, publicKey, message, signature)
}

/**
 * Verifies an Ed25519 signature under Petrel's single acceptance rule (see the file header), using
 * WebCrypto when it is present and passes its self-test, noble otherwise; both give the same answer.
 * Inputs are copied on entry, so mutating them afterwards does not affect the result.
 *
 * @example if (!(await verify(device.signingKey, bytes, sig))) throw new PetrelError(ErrorCode.EnvelopeRejected, 'bad signature')
 * @returns false (never throws) for any malformed key or signature, including wrong lengths.
 * @throws TypeError only when an argument is not a Uint8Array.
 */
export async function verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): Promise<boolean> {
  assertBytes(publicKey, 'publicKey')
  assertBytes(message, 'message')
  assertBytes(signature, 'signature')
  return verifyOwned(ownCopy(publicKey), ownCopy(message), ownCopy(signature), message.length <= SYNC_VERIFY_MAX_BYTES)
}

/** One item for {@link verifyBatch}. */
export interface VerifyItem {
  publicKey: Uint8Array
  message: Uint8Array
  signature: Uint8Array
}

/** Options of {@link verifyBatch}. */
export interface VerifyBatchOptions {
  /**
   * The messages are handed over: built for this call, never changed or reused by the caller
   * afterwards. They are then not copied first — on a catch-up every envelope's signed bytes
   * (up to ~40 KB each) were copied twice, ~10 % of the client's time.
   */
  handOverMessages?: boolean
}

/**
 * Verifies many signatures, running native verifications concurrently (roughly twice the throughput
 * of awaiting them one by one). Results are in input order; one bad item does not affect the others.
 *
 * @example const results = await verifyBatch(updates.map((u) => ({ publicKey: u.key, message: u.body, signature: u.sig })))
 * @throws TypeError when `items` is not an array or an item field is not a Uint8Array.
 */
export async function verifyBatch(items: readonly VerifyItem[], options: VerifyBatchOptions = {}): Promise<boolean[]> {
  if (!Array.isArray(items)) throw new TypeError('items must be an array')
  // Validate and snapshot everything synchronously so a TypeError is thrown before any work starts.
  const owned = items.map((item, i) => {
    if (typeof item !== 'object' || item === null) throw new TypeError(`items[${i}] must be an object`)
    assertBytes(item.publicKey, `items[${i}].publicKey`)
    assertBytes(item.message, `items[${i}].message`)
    assertBytes(item.signature, `items[${i}].signature`)
    const message = options.handOverMessages && item.message.buffer instanceof ArrayBuffer ? (item.message as Uint8Array<ArrayBuffer>) : ownCopy(item.message)
    return [ownCopy(item.publicKey), message, ownCopy(item.signature)] as const
  })
  // A few small ones (live traffic) at once here; many (a catch-up), or large ones (a history
  // snapshot's ~1 MB parts, each hashed whole), on WebCrypto's thread pool, where they run on
  // every core: 10,000 one after another would hold this thread ~0.6 s.
  let bytes = 0
  for (const [, msg] of owned) bytes += msg.length
  const sync = owned.length <= SYNC_VERIFY_MAX && bytes <= SYNC_VERIFY_MAX_BYTES
  return Promise.all(owned.map(([pk, msg, sig]) => verifyOwned(pk, msg, sig, sync)))
}

/** The largest batch {@link verifyBatch} checks on the calling thread where Node can (see nodeVerifying)… */
const SYNC_VERIFY_MAX = 8
/** …and the most bytes it (and a single {@link verify}) hashes there. */
const SYNC_VERIFY_MAX_BYTES = 64 * 1024

/**
 * Node's own Ed25519 verification, called synchronously (as {@link nodeSigning} signs): ~62 µs
 * of CPU a signature against ~70 µs through WebCrypto, whose thread-pool hop also puts each
 * received envelope's check behind a wake-up of another thread on cores that are already busy.
 * The same OpenSSL code answers in both; it must pass the same self-test as the WebCrypto path
 * (the RFC 8032 vector accepted, R with a torsion component refused, R = identity accepted),
 * and the JavaScript prechecks run first on every path. Undefined in browsers or when that
 * test fails.
 */
interface NodeVerifying {
  createPublicKey(options: { key: Uint8Array; format: 'der'; type: 'spki' }): NodeKeyObject
  verify(algorithm: null, data: Uint8Array, key: NodeKeyObject, signature: Uint8Array): boolean
}
const SPKI_ED25519_PREFIX = fromHex('302a300506032b6570032100')

function nodePublicKey(mod: NodeVerifying, publicKey: Uint8Array): NodeKeyObject {
  const der = new Uint8Array(SPKI_ED25519_PREFIX.length + publicKey.length)
  der.set(SPKI_ED25519_PREFIX)
  der.set(publicKey, SPKI_ED25519_PREFIX.length)
  return mod.createPublicKey({ key: der, format: 'der', type: 'spki' })
}

const nodeVerifying: NodeVerifying | undefined = (() => {
  try {
    const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process
    const mod = proc?.getBuiltinModule?.('node:crypto') as NodeVerifying | undefined
    if (!mod || typeof mod.verify !== 'function' || typeof mod.createPublicKey !== 'function') return undefined
    const key = nodePublicKey(mod, PROBE_PUBLIC)
    const empty = new Uint8Array(0)
    const ok = mod.verify(null, empty, key, PROBE_VALID) && !mod.verify(null, empty, key, PROBE_TORSION_R) && mod.verify(null, empty, key, PROBE_IDENTITY_R)
    return ok ? mod : undefined
  } catch {
    return undefined
  }
})()

let useNodeVerifying = nodeVerifying !== undefined

/** After the prechecks: Node's synchronous answer, or undefined where there is none (or it failed: the caller goes on asynchronously). */
function nodeVerifyNow(entry: KeyEntry, publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean | undefined {
  return useNodeVerifying && nodeVerifying !== undefined ? nodeEquation(nodeVerifying, entry, publicKey, message, signature) : undefined
}

function nodeEquation(mod: NodeVerifying, entry: KeyEntry, publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean | undefined {
  try {
    entry.nodeKey ??= nodePublicKey(mod, publicKey)
    return mod.verify(null, message, entry.nodeKey, signature)
  } catch {
    return undefined
  }
}

/**
 * Tests only: verify as a browser does (WebCrypto, asynchronous) with `false`; `true` goes back
 * to Node's synchronous verification. Returns false when that is asked for and there is none.
 *
 * @example setNodeVerifying(false); try { … } finally { setNodeVerifying(true) }
 */
export function setNodeVerifying(enabled: boolean): boolean {
  if (enabled && nodeVerifying === undefined) return false
  useNodeVerifying = enabled
  return true
}

/**
 * Verifies with Node's synchronous Ed25519 after the same prechecks as {@link verifyWithNoble};
 * undefined where Node's verifier is missing or failed its self-test. For tests comparing paths.
 *
 * @example expect(verifyWithNodeSync(pk, msg, sig)).toBe(verifyWithNoble(pk, msg, sig))
 */
export function verifyWithNodeSync(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean | undefined {
  assertBytes(publicKey, 'publicKey')
  assertBytes(message, 'message')
  assertBytes(signature, 'signature')
  if (nodeVerifying === undefined) return undefined
  const entry = precheck(publicKey, signature)
  if (entry === null || entry.point === null) return false
  return nodeEquation(nodeVerifying, entry, publicKey, message, signature)
}

/**
 * Imported signing keys, per caller-owned secret array. Importing costs more than signing
 * (measured ~10% of a send); a device signs with the same identity key for its whole life.
 * Keyed by the array's identity: a caller must not mutate a secret it has signed with.
 */
const signKeyCache = new WeakMap<Uint8Array, Promise<CryptoKey>>()

async function nativeSignCached(subtle: Subtle, callerKey: Uint8Array, secretKey: Uint8Array, message: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
  let key = signKeyCache.get(callerKey)
  if (!key) {
    key = importSigningKey(subtle, secretKey)
    signKeyCache.set(callerKey, key)
    key.catch(() => signKeyCache.delete(callerKey))
  }
  return new Uint8Array(await subtle.sign(ED25519_ALG, await key, message))
}

/** The seed as a PKCS#8 DER private key, for the native APIs; the caller zeroes it after use. */
function pkcs8(secretKey: Uint8Array): Uint8Array<ArrayBuffer> {
  const der = new Uint8Array(PKCS8_ED25519_PREFIX.length + secretKey.length)
  der.set(PKCS8_ED25519_PREFIX)
  der.set(secretKey, PKCS8_ED25519_PREFIX.length)
  return der
}

async function importSigningKey(subtle: Subtle, secretKey: Uint8Array): Promise<CryptoKey> {
  const der = pkcs8(secretKey)
  try {
    return await subtle.importKey('pkcs8', der, ED25519_ALG, false, ['sign'])
  } finally {
    der.fill(0)
  }
}

async function nativeSignRaw(subtle: Subtle, secretKey: Uint8Array, message: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
  return new Uint8Array(await subtle.sign(ED25519_ALG, await importSigningKey(subtle, secretKey), message))
}

async function probeNativeSign(): Promise<boolean> {
  const subtle = getSubtle()
  if (subtle === undefined || typeof subtle.sign !== 'function') return false
  try {
    const sig = await nativeSignRaw(subtle, PROBE_SECRET, new Uint8Array(0))
    return constantTimeEqual(sig, PROBE_VALID)
  } catch {
    return false
  }
}

async function nativeSignAvailable(): Promise<boolean> {
  if (nativeSignState !== undefined) return nativeSignState
  nativeSignProbe ??= probeNativeSign()
  const ok = await nativeSignProbe
  nativeSignState ??= ok
  return nativeSignState
}

interface NodeKeyObject {
  readonly type: string
}
interface NodeSigning {
  createPrivateKey(options: { key: Uint8Array; format: 'der'; type: 'pkcs8' }): NodeKeyObject
  sign(algorithm: null, data: Uint8Array, key: NodeKeyObject): Uint8Array
}

/**
 * Node's own Ed25519 signing, called synchronously. A signature costs ~32 µs of CPU this way
 * and ~56–60 µs through WebCrypto or Node's callback form, whose thread-pool hop costs more
 * than the signature; on two busy cores the CPU is what counts. `process.getBuiltinModule`
 * keeps this module free of a static node: import (see aead.ts). Checked against the RFC 8032
 * vector once; undefined in browsers, or when that check fails.
 */
const nodeSigning: NodeSigning | undefined = (() => {
  try {
    const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process
    const mod = proc?.getBuiltinModule?.('node:crypto') as NodeSigning | undefined
    if (!mod || typeof mod.sign !== 'function' || typeof mod.createPrivateKey !== 'function') return undefined
    const sig = mod.sign(null, new Uint8Array(0), nodePrivateKey(mod, PROBE_SECRET))
    return constantTimeEqual(new Uint8Array(sig.buffer, sig.byteOffset, sig.byteLength), PROBE_VALID) ? mod : undefined
  } catch {
    return undefined
  }
})()

function nodePrivateKey(mod: NodeSigning, secretKey: Uint8Array): NodeKeyObject {
  const der = pkcs8(secretKey)
  try {
    return mod.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })
  } finally {
    der.fill(0)
  }
}

/**
 * Which backend {@link sign} uses first: 'node' (Node's crypto, synchronous), 'webcrypto' or
 * 'noble'. All three give identical bytes; this is for diagnostics and tests.
 *
 * @example console.log(signBackend()) // 'node' under Node ≥ 20.16
 */
export function signBackend(): 'node' | 'webcrypto' | 'noble' {
  if (useNodeSigning) return 'node'
  return nativeSignState === false || getSubtle() === undefined ? 'noble' : 'webcrypto'
}

let useNodeSigning = nodeSigning !== undefined

/**
 * Tests only: sign as a browser does (WebCrypto, asynchronous) with `false`; `true` goes back
 * to Node's synchronous signing. Returns false when Node signing is asked for and there is none.
 *
 * @example setNodeSigning(false); try { … } finally { setNodeSigning(true) }
 */
export function setNodeSigning(enabled: boolean): boolean {
  if (enabled && nodeSigning === undefined) return false
  useNodeSigning = enabled
  return true
}

/** Node key objects per caller-owned secret array, as {@link signKeyCache}. */
const nodeKeyCache = new WeakMap<Uint8Array, NodeKeyObject>()

function nodeSign(mod: NodeSigning, callerKey: Uint8Array, secretKey: Uint8Array, message: Uint8Array): Uint8Array {
  let key = nodeKeyCache.get(callerKey)
  if (!key) {
    key = nodePrivateKey(mod, secretKey)
    nodeKeyCache.set(callerKey, key)
  }
  const sig = mod.sign(null, message, key)
  return new Uint8Array(sig.buffer, sig.byteOffset, sig.byteLength)
}

/**
 * Signs `message` (RFC 8032, deterministic) with a 32-byte seed. Uses Node's crypto where it
 * exists, else WebCrypto when it passes a known-answer self-test, else noble; all produce
 * identical bytes.
 *
 * @example const sig = await sign(device.signingSecretKey, bytes)
 * @throws TypeError / RangeError for a non-Uint8Array argument or a secret key that is not 32 bytes.
 */
export async function sign(secretKey: Uint8Array, message: Uint8Array): Promise<Uint8Array> {
  assertSecretKey(secretKey)
  assertBytes(message, 'message')
  const sk = ownCopy(secretKey)
  try {
    if (nodeSigning !== undefined && useNodeSigning) {
      try {
        // Synchronous: nothing can change `message` meanwhile, so it is not copied (a history
        // snapshot's parts are ~1 MB each).
        return nodeSign(nodeSigning, secretKey, sk, message)
      } catch {
        // Fall through to WebCrypto / noble, which give the same bytes.
      }
    }
    const msg = ownCopy(message)
    if (nativeSignState ?? (await nativeSignAvailable())) {
      const subtle = getSubtle()
      if (subtle !== undefined) {
        try {
          return await nativeSignCached(subtle, secretKey, sk, msg)
        } catch {
          nativeSignState = false
        }
      }
    }
    return ed25519.sign(msg, sk)
  } finally {
    sk.fill(0)
  }
}

/**
 * Derives the 32-byte public key for a 32-byte seed.
 *
 * @example const publicKey = publicKeyFromSecret(secretKey)
 */
export function publicKeyFromSecret(secretKey: Uint8Array): Uint8Array {
  assertSecretKey(secretKey)
  return ed25519.getPublicKey(secretKey)
}

/**
 * Generates a fresh Ed25519 key pair from the platform CSPRNG. Always satisfies the acceptance rule.
 *
 * @example const { secretKey, publicKey } = generateSigningKeyPair()
 */
export function generateSigningKeyPair(): SigningKeyPair {
  const secretKey = randomBytes(ED25519_SECRET_KEY_LENGTH)
  return { secretKey, publicKey: ed25519.getPublicKey(secretKey) }
}

/**
 * Domain strings for every kind of signature in Petrel. Each signed structure gets its own, so a
 * signature lifted from one context (say, a chat message) can never be replayed as another
 * (say, a membership change) even if the payload bytes happen to parse in both.
 */
export const SignatureDomain = {
  ConnectChallenge: 'connect-challenge',
  DeviceCertificate: 'device-certificate',
  Envelope: 'envelope',
  Genesis: 'genesis',
  Invite: 'invite',
  Join: 'join',
  Epoch: 'epoch',
  Membership: 'membership',
  Message: 'message',
  MessageBatch: 'message-batch',
  Snapshot: 'snapshot',
  Link: 'link',
  Awareness: 'awareness',
} as const

export type SignatureDomain = (typeof SignatureDomain)[keyof typeof SignatureDomain]

// Lowercase ASCII only: no NUL (the separator), so the prefix is unambiguous, and no Unicode
// normalisation questions about which bytes a domain name stands for.
const DOMAIN_PATTERN = /^[a-z0-9][a-z0-9-]*$/

/**
 * The exact bytes Petrel signs: utf8(`petrel/v1/${domain}`) || 0x00 || payload.
 *
 * @example const bytes = signedBytes(SignatureDomain.Message, payload)
 * @throws TypeError when `domain` is not a string; RangeError when it is not `[a-z0-9][a-z0-9-]*`.
 */
export function signedBytes(domain: string, payload: Uint8Array): Uint8Array<ArrayBuffer> {
  if (typeof domain !== 'string') throw new TypeError(`domain must be a string, got ${typeof domain}`)
  if (!DOMAIN_PATTERN.test(domain)) throw new RangeError(`invalid signature domain ${JSON.stringify(domain)}`)
  assertBytes(payload, 'payload')
  return concatBytes(utf8(`petrel/v1/${domain}`), Uint8Array.of(0), payload)
}

/**
 * Signs `payload` under a signature domain (see {@link signedBytes}).
 *
 * @example const sig = await signWithDomain(SignatureDomain.Envelope, secretKey, envelopeBytes)
 */
export function signWithDomain(domain: SignatureDomain, secretKey: Uint8Array, payload: Uint8Array): Promise<Uint8Array> {
  return sign(secretKey, signedBytes(domain, payload))
}

/**
 * Verifies a signature made by {@link signWithDomain} for the same domain.
 *
 * @example const ok = await verifyWithDomain(SignatureDomain.Envelope, publicKey, envelopeBytes, sig)
 * @returns false (never throws) for malformed keys or signatures; throws only for bad argument types or domain.
 */
export async function verifyWithDomain(
  domain: SignatureDomain,
  publicKey: Uint8Array,
  payload: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  assertBytes(publicKey, 'publicKey')
  assertBytes(signature, 'signature')
  // signedBytes already returns a private copy of the payload.
  return verifyOwned(ownCopy(publicKey), signedBytes(domain, payload), ownCopy(signature), payload.length <= SYNC_VERIFY_MAX_BYTES)
}
