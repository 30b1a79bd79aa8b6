import { ED25519_TORSION_SUBGROUP, ed25519, x25519 } from '@noble/curves/ed25519.js'
import { bytesToNumberLE, concatBytes, hexToBytes, numberToBytesLE } from '@noble/curves/utils.js'
import { sha512 } from '@noble/hashes/sha2.js'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import {
  AEAD_TAG_LENGTH,
  aeadBackend,
  setAeadBackend,
  SignatureDomain,
  WRAPPED_KEY_LENGTH,
  constantTimeEqual,
  fromBase64Url,
  matchesBase64Url,
  fromHex,
  randomBytes,
  generateAgreementKeyPair,
  agreementPublicKeyFromSecret,
  sharedSecret,
  sharedSecretNoble,
  x25519Backend,
  generateSigningKeyPair,
  isCanonicalPointEncoding,
  isCanonicalScalar,
  isValidSigningPublicKey,
  nativeVerifyAvailable,
  open,
  publicKeyFromSecret,
  randomKey,
  randomNonce,
  seal,
  sealInSteps,
  sign,
  signBackend,
  signWithDomain,
  signedBytes,
  toBase64Url,
  sha256,
  toHex,
  unwrapKey,
  verify,
  verifyBatch,
  verifyWithDomain,
  verifyWithNative,
  verifyWithNodeSync,
  setNodeVerifying,
  verifyWithNoble,
  wrapKey,
  wrapKeyForAll,
  isSmallOrderAgreementKey,
} from '../../src/shared/crypto/index.js'
import { sha256Backend, sha256Noble } from '../../src/shared/crypto/hash.js'
import { ErrorCode, PetrelError } from '../../src/shared/errors.js'

const Point = ed25519.Point
type EdPoint = ReturnType<typeof Point.fromBytes>
const Fn = Point.Fn
const L = Fn.ORDER
const p = Point.Fp.ORDER
const enc = (s: string) => new TextEncoder().encode(s)

/** k = SHA-512(R || A || M) mod L over the exact bytes given (as every verifier hashes them). */
const challenge = (R: Uint8Array, A: Uint8Array, M: Uint8Array): bigint =>
  Fn.create(bytesToNumberLE(sha512(concatBytes(R, A, M))))

/** Encodes y (possibly >= p, i.e. non-canonical) with an explicit x sign bit. */
const rawEncoding = (y: bigint, sign: boolean): Uint8Array => {
  const b = numberToBytesLE(y, 32)
  if (sign) b[31]! |= 0x80
  return b
}

const sig = (R: Uint8Array, S: bigint): Uint8Array => concatBytes(R, numberToBytesLE(S, 32))

/** Verifies with WebCrypto directly, without Petrel's prechecks — what a naive native path would do. */
async function rawNative(pk: Uint8Array, msg: Uint8Array, signature: Uint8Array): Promise<boolean> {
  try {
    const key = await crypto.subtle.importKey('raw', new Uint8Array(pk), { name: 'Ed25519' }, false, ['verify'])
    return await crypto.subtle.verify('Ed25519', key, new Uint8Array(signature), new Uint8Array(msg))
  } catch {
    return false
  }
}

/** Noble's default verifier (ZIP-215 in noble 2.x: cofactored equation, lenient encodings). */
const nobleDefault = (pk: Uint8Array, msg: Uint8Array, signature: Uint8Array): boolean => {
  try {
    return ed25519.verify(signature, msg, pk)
  } catch {
    return false
  }
}

/** Noble's and WebCrypto's answers; Node's synchronous verifier must give WebCrypto's (the same OpenSSL code). */
async function bothPaths(pk: Uint8Array, msg: Uint8Array, signature: Uint8Array): Promise<[boolean, boolean]> {
  const native = await verifyWithNative(pk, msg, signature)
  expect(verifyWithNodeSync(pk, msg, signature)).toBe(native)
  return [verifyWithNoble(pk, msg, signature), native]
}

interface Vector {
  name: string
  pk: Uint8Array
  msg: Uint8Array
  sig: Uint8Array
}

// A fixed signer whose secret scalar we know, so the tests can forge signatures with unusual R/A.
const seed = hexToBytes('4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb')
const { scalar: a, pointBytes: A } = ed25519.utils.getExtendedPublicKey(seed)
const Apoint = Point.fromBytes(A)
const torsion = ED25519_TORSION_SUBGROUP.map((h) => Point.fromHex(h))
const nonIdentityTorsion = torsion.filter((t) => !t.is0())
const order = (t: EdPoint): number => {
  let q = t
  for (let n = 1; n <= 8; n++) {
    if (q.is0()) return n
    q = q.add(t)
  }
  return -1
}

// Non-canonical encodings of small-order points that fit in 32 bytes. Order-8 points have y close to
// 2^255 so y + p does not fit; the ones below do.
const nonCanonicalSmallOrder: Array<[string, Uint8Array]> = [
  ['y = p (≡ 0), sign 0', rawEncoding(p, false)],
  ['y = p (≡ 0), sign 1', rawEncoding(p, true)],
  ['y = p + 1 (≡ 1, identity), sign 0', rawEncoding(p + 1n, false)],
  ['y = p + 1 (≡ 1, identity), sign 1', rawEncoding(p + 1n, true)],
  ['y = 1 (identity), x = 0 with sign 1', rawEncoding(1n, true)],
  ['y = p − 1 (order 2), x = 0 with sign 1', rawEncoding(p - 1n, true)],
]

/**
 * For a small-order key, finds R (small-order) and a message so that S = 0 satisfies even the
 * cofactorless equation R = −[k]A — i.e. a forgery that needs no secret at all and that a
 * verifier without a small-order-key check accepts (Chalkias et al. case 0).
 */
function forgeForSmallOrderKey(pkBytes: Uint8Array, label: string): Vector {
  const Apt = Point.fromBytes(pkBytes, true)
  for (let i = 0; i < 256; i++) {
    const msg = enc(`${label}/${i}`)
    for (const R of torsion) {
      const Rb = R.toBytes()
      const k = challenge(Rb, pkBytes, msg)
      if (Apt.multiplyUnsafe(k).negate().equals(R)) return { name: label, pk: pkBytes, msg, sig: sig(Rb, 0n) }
    }
  }
  throw new Error(`no forgery found for ${label}`)
}

const RFC8032 = [
  {
    name: 'TEST 1',
    sk: '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60',
    pk: 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a',
    msg: '',
    sig: 'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
  },
  {
    name: 'TEST 2',
    sk: '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb',
    pk: '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c',
    msg: '72',
    sig: '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
  },
  {
    name: 'TEST 3',
    sk: 'c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7',
    pk: 'fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025',
    msg: 'af82',
    sig: '6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a',
  },
]

// "Taming the many EdDSAs" (Chalkias, Garillot, Nikolaenko, SSR 2020), test cases 0–11, as published
// in novifinancial/ed25519-speccheck cases.txt. Every one breaks Petrel's rule somewhere:
// 0–1 small-order A; 2–5 mixed-order A (4–5 valid only cofactored); 6–7 S >= L;
// 8–9 non-canonical R with mixed-order A; 10–11 non-canonical (small-order) A.
const TAMING: Array<[string, string, string]> = [
  ['8c93255d71dcab10e8f379c26200f3c7bd5f09d9bc3068d3ef4edeb4853022b6', 'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa', 'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a0000000000000000000000000000000000000000000000000000000000000000'],
  ['9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79', 'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa', 'f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04'],
  ['aebf3f2601a0c8c5d39cc7d8911642f740b78168218da8471772b35f9d35b9ab', 'f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43', 'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa8c4bd45aecaca5b24fb97bc10ac27ac8751a7dfe1baff8b953ec9f5833ca260e'],
  ['9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79', 'cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d', '9046a64750444938de19f227bb80485e92b83fdb4b6506c160484c016cc1852f87909e14428a7a1d62e9f22f3d3ad7802db02eb2e688b6c52fcd6648a98bd009'],
  ['e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c', 'cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d', '160a1cb0dc9c0258cd0a7d23e94d8fa878bcb1925f2c64246b2dee1796bed5125ec6bc982a269b723e0668e540911a9a6a58921d6925e434ab10aa7940551a09'],
  ['e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c', 'cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d', '21122a84e0b5fca4052f5b1235c80a537878b38f3142356b2c2384ebad4668b7e40bc836dac0f71076f9abe3a53f9c03c1ceeeddb658d0030494ace586687405'],
  ['85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40', '442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623', 'e96f66be976d82e60150baecff9906684aebb1ef181f67a7189ac78ea23b6c0e547f7690a0e2ddcd04d87dbc3490dc19b3b3052f7ff0538cb68afb369ba3a514'],
  ['85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40', '442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623', '8ce5b96c8f26d0ab6c47958c9e68b937104cd36e13c33566acd2fe8d38aa19427e71f98a473474f2f13f06f97c20d58cc3f54b8bd0d272f42b695dd7e89a8c22'],
  ['9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41', 'f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43', 'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff03be9678ac102edcd92b0210bb34d7428d12ffc5df5f37e359941266a4e35f0f'],
  ['9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41', 'f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43', 'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffca8c5b64cd208982aa38d4936621a4775aa233aa0505711d8fdcfdaa943d4908'],
  ['e96b7021eb39c1a163b6da4e3093dcd3f21387da4cc4572be588fafae23c155b', 'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff', 'a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dca5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04'],
  ['39a591f5321bbe07fd5a23dc2f39d025d74526615746727ceefd6e82ae65c06f', 'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff', 'a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dca5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04'],
]

function buildEdgeVectors(): Vector[] {
  const vectors: Vector[] = []
  const msg = enc('petrel edge case')

  // (a) Non-canonical S: a valid signature with S replaced by S + L (same value mod L).
  const good = ed25519.sign(msg, seed)
  const S = bytesToNumberLE(good.subarray(32))
  vectors.push({ name: '(a) S + L', pk: A, msg, sig: sig(good.subarray(0, 32), S + L) })
  vectors.push({ name: '(a) S + 2L', pk: A, msg, sig: sig(good.subarray(0, 32), S + 2n * L) })

  // (b) Small-order public keys, canonical and non-canonical, each with a secret-free forgery.
  for (const h of ED25519_TORSION_SUBGROUP) vectors.push(forgeForSmallOrderKey(hexToBytes(h), `(b) small-order A ${h}`))
  for (const [label, pk] of nonCanonicalSmallOrder) vectors.push(forgeForSmallOrderKey(pk, `(b/e) non-canonical small-order A, ${label}`))

  // (c) Mixed-order key A' = A + T. S = r + k·a satisfies 8[S]B = 8R + 8[k]A' (cofactored). When
  // k ≡ 0 mod ord(T) it also satisfies the cofactorless equation, so only the torsion check stops it.
  for (const [ti, T] of nonIdentityTorsion.entries()) {
    const Apb = Apoint.add(T).toBytes()
    let found = 0
    for (let r = 1n; found !== 3 && r < 500n; r++) {
      const Rb = Point.BASE.multiply(r).toBytes()
      const k = challenge(Rb, Apb, msg)
      const cofactorlessToo = k % BigInt(order(T)) === 0n
      const bit = cofactorlessToo ? 1 : 2
      if (found & bit) continue
      found |= bit
      vectors.push({
        name: `(c) mixed-order A = A + T${order(T)}#${ti} (${cofactorlessToo ? 'passes cofactorless too' : 'cofactored only'})`,
        pk: Apb,
        msg,
        sig: sig(Rb, Fn.create(r + k * a)),
      })
    }
  }

  // (d) R with a torsion component: R' = [r]B + T, k from R', S = r + k·a. Cofactored-valid only.
  for (const [ti, T] of nonIdentityTorsion.entries()) {
    const r = 12345n + BigInt(ti)
    const Rb = Point.BASE.multiply(r).add(T).toBytes()
    const k = challenge(Rb, A, msg)
    vectors.push({ name: `(d) R + T${order(T)}#${ti}`, pk: A, msg, sig: sig(Rb, Fn.create(r + k * a)) })
  }

  // (e) Non-canonical R: small-order R encodings with S = k·a, so [S]B − [k]A = O and 8R = O.
  // 'y = p + 1, sign 0' is a non-canonical identity: a verifier that decodes R and compares points
  // (instead of comparing encodings) would accept it even cofactorless.
  for (const [label, Rb] of nonCanonicalSmallOrder) {
    const k = challenge(Rb, A, msg)
    vectors.push({ name: `(e) non-canonical R, ${label}`, pk: A, msg, sig: sig(Rb, Fn.create(k * a)) })
  }
  // (e) Non-canonical R = y + p for a large-order point, even though no valid S can be computed for
  // it without its discrete log: it must be rejected before any arithmetic.
  for (let y = 2n; y < 19n; y++) {
    try {
      const R = Point.fromBytes(numberToBytesLE(y, 32))
      if (R.isSmallOrder()) continue
      vectors.push({ name: `(e) non-canonical R, y = ${y} + p`, pk: A, msg, sig: concatBytes(rawEncoding(y + p, false), good.subarray(32)) })
      break
    } catch {
      // not on the curve
    }
  }
  return vectors
}

const edgeVectors = buildEdgeVectors()
const tamingVectors: Vector[] = TAMING.map(([m, pk, s], i) => ({
  name: `Taming case ${i}`,
  msg: hexToBytes(m),
  pk: hexToBytes(pk),
  sig: hexToBytes(s),
}))

describe('ed25519 acceptance rule', () => {
  it('uses the native WebCrypto backend on Node 20 (self-test passes)', async () => {
    expect(await nativeVerifyAvailable()).toBe(true)
  })

  for (const v of RFC8032) {
    it(`signs and verifies RFC 8032 §7.1 ${v.name} identically on both paths`, async () => {
      const sk = hexToBytes(v.sk)
      const pk = hexToBytes(v.pk)
      const msg = hexToBytes(v.msg)
      expect(toHex(publicKeyFromSecret(sk))).toBe(v.pk)
      expect(toHex(await sign(sk, msg))).toBe(v.sig)
      expect(toHex(ed25519.sign(msg, sk))).toBe(v.sig)
      const s = hexToBytes(v.sig)
      expect(await bothPaths(pk, msg, s)).toEqual([true, true])
      expect(await verify(pk, msg, s)).toBe(true)
      expect(isValidSigningPublicKey(pk)).toBe(true)
    })
  }

  it("signs with Node's own crypto under Node, synchronously, to the bytes noble makes", async () => {
    expect(signBackend()).toBe('node')
    const { secretKey } = generateSigningKeyPair()
    const msg = randomBytes(123)
    let settled = false
    const pending = sign(secretKey, msg).then((s) => {
      settled = true
      return s
    })
    // Nothing waits on a thread pool: the signature is ready by the next microtask.
    await Promise.resolve()
    await Promise.resolve()
    expect(settled).toBe(true)
    expect(toHex(await pending)).toBe(toHex(ed25519.sign(msg, secretKey)))
  })

  it('signs with native and noble to identical bytes for random keys and messages', async () => {
    for (let i = 0; i < 20; i++) {
      const { secretKey, publicKey } = generateSigningKeyPair()
      const msg = crypto.getRandomValues(new Uint8Array(i * 7))
      const s = await sign(secretKey, msg)
      expect(toHex(s)).toBe(toHex(ed25519.sign(msg, secretKey)))
      expect(await bothPaths(publicKey, msg, s)).toEqual([true, true])
    }
  })

  it('builds every constructed edge-case family', () => {
    const families = ['(a)', '(b)', '(c)', '(d)', '(e)']
    for (const f of families) expect(edgeVectors.some((v) => v.name.startsWith(f))).toBe(true)
    expect(edgeVectors.filter((v) => v.name.startsWith('(b) small-order A')).length).toBe(8)
    expect(edgeVectors.filter((v) => v.name.includes('non-canonical small-order A')).length).toBe(6)
    expect(edgeVectors.some((v) => v.name.includes('passes cofactorless too'))).toBe(true)
    expect(edgeVectors.some((v) => v.name.includes('cofactored only'))).toBe(true)
  })

  for (const v of [...edgeVectors, ...tamingVectors]) {
    it(`rejects ${v.name} on both paths`, async () => {
      expect(await bothPaths(v.pk, v.msg, v.sig)).toEqual([false, false])
      expect(await verify(v.pk, v.msg, v.sig)).toBe(false)
    })
  }

  it('rejects every edge-case public key up front (isValidSigningPublicKey)', () => {
    for (const v of [...edgeVectors, ...tamingVectors]) {
      if (v.name.startsWith('(b') || v.name.startsWith('(c)')) expect(isValidSigningPublicKey(v.pk)).toBe(false)
    }
    expect(isValidSigningPublicKey(A)).toBe(true)
    // A non-canonical encoding of a large-order point: y + p for some small y on the curve.
    expect(isValidSigningPublicKey(rawEncoding(p + 2n, false))).toBe(false)
    // y >= 2^255 - 19 but bytes that are not on the curve at all.
    expect(isValidSigningPublicKey(new Uint8Array(32).fill(0xff))).toBe(false)
  })

  it('is exactly the rule the native and noble backends disagree on without it', async () => {
    // This is the split-brain the prechecks exist to prevent: noble's default verify (ZIP-215,
    // cofactored, lenient encodings) and raw WebCrypto/OpenSSL (cofactorless, no key checks) give
    // different answers on the same bytes.
    const all = [...edgeVectors, ...tamingVectors]
    const nobleAccepts = all.filter((v) => nobleDefault(v.pk, v.msg, v.sig)).map((v) => v.name)
    const rawNativeAccepts: string[] = []
    for (const v of all) if (await rawNative(v.pk, v.msg, v.sig)) rawNativeAccepts.push(v.name)

    // noble 2.x default accepts small-order keys, mixed-order keys, torsioned R, non-canonical R/A.
    expect(nobleAccepts.filter((n) => n.startsWith('(d) R + T')).length).toBe(7)
    expect(nobleAccepts.some((n) => n.startsWith('(b) small-order A'))).toBe(true)
    expect(nobleAccepts.some((n) => n.startsWith('(e) non-canonical R'))).toBe(true)
    expect(nobleAccepts).toContain('Taming case 0')
    // ...but not S >= L (it range-checks S).
    expect(nobleAccepts).not.toContain('(a) S + L')

    // Raw native: cofactorless and encoding-compare, so torsioned R and non-canonical R fail, but
    // it imports any 32 bytes as a key, so secret-free small-order forgeries pass.
    expect(rawNativeAccepts.some((n) => n.startsWith('(d) R + T'))).toBe(false)
    expect(rawNativeAccepts.some((n) => n.startsWith('(b) small-order A'))).toBe(true)
    expect(rawNativeAccepts.some((n) => n.includes('passes cofactorless too'))).toBe(true)

    const disagreements = all.filter((v) => nobleAccepts.includes(v.name) !== rawNativeAccepts.includes(v.name))
    expect(disagreements.length).toBeGreaterThan(0)
  })

  it('accepts R = identity when the key holder made it (the rule allows it; both paths agree)', async () => {
    const msg = enc('identity R')
    const Rb = Point.ZERO.toBytes()
    const s = sig(Rb, Fn.create(challenge(Rb, A, msg) * a))
    expect(await bothPaths(A, msg, s)).toEqual([true, true])
  })

  it('rejects every single-bit flip of signature, message and public key on both paths', async () => {
    const msg = enc('bit flip target!')
    const s = await sign(seed, msg)
    expect(await bothPaths(A, msg, s)).toEqual([true, true])
    const flip = (b: Uint8Array, bit: number) => {
      const c = new Uint8Array(b)
      c[bit >> 3]! ^= 1 << (bit & 7)
      return c
    }
    for (let bit = 0; bit < s.length * 8; bit++) expect(await bothPaths(A, msg, flip(s, bit)), `sig bit ${bit}`).toEqual([false, false])
    for (let bit = 0; bit < msg.length * 8; bit++) expect(await bothPaths(A, flip(msg, bit), s), `msg bit ${bit}`).toEqual([false, false])
    for (let bit = 0; bit < A.length * 8; bit++) expect(await bothPaths(flip(A, bit), msg, s), `pk bit ${bit}`).toEqual([false, false])
  })

  it('agrees on random garbage keys and signatures', async () => {
    const msg = enc('garbage')
    for (let i = 0; i < 64; i++) {
      const pk = i % 2 === 0 ? A : crypto.getRandomValues(new Uint8Array(32))
      const s = crypto.getRandomValues(new Uint8Array(64))
      if (i % 4 === 0) s[63]! &= 0x0f // make S < L likely so the equation itself is exercised
      const [n, w] = await bothPaths(pk, msg, s)
      expect(n).toBe(false)
      expect(w).toBe(false)
    }
  })

  it('returns false for wrong lengths and throws TypeError only for non-Uint8Array arguments', async () => {
    const msg = enc('x')
    const s = await sign(seed, msg)
    for (const [pk, sg] of [
      [A.subarray(0, 31), s],
      [concatBytes(A, Uint8Array.of(0)), s],
      [A, s.subarray(0, 63)],
      [A, concatBytes(s, Uint8Array.of(0))],
      [new Uint8Array(0), new Uint8Array(0)],
    ] as const) {
      expect(await verify(pk, msg, sg)).toBe(false)
      expect(await bothPaths(pk, msg, sg)).toEqual([false, false])
    }
    const bad = [undefined, null, 'abc', [1, 2, 3], new ArrayBuffer(32), new Uint16Array(16)] as unknown as Uint8Array[]
    for (const b of bad) {
      await expect(verify(b, msg, s)).rejects.toThrow(TypeError)
      await expect(verify(A, b, s)).rejects.toThrow(TypeError)
      await expect(verify(A, msg, b)).rejects.toThrow(TypeError)
      expect(() => verifyWithNoble(A, msg, b)).toThrow(TypeError)
    }
    await expect(sign(seed.subarray(0, 31), msg)).rejects.toThrow(RangeError)
    await expect(sign('seed' as unknown as Uint8Array, msg)).rejects.toThrow(TypeError)
    expect(() => publicKeyFromSecret(new Uint8Array(64))).toThrow(RangeError)
  })

  it('verifies what was passed at call time even if the caller mutates buffers afterwards', async () => {
    const msg = enc('snapshot me')
    const s = await sign(seed, msg)
    const pending = verify(A, msg, s)
    msg[0] = 0
    s[0]! ^= 1
    expect(await pending).toBe(true)
  })

  it('verifyBatch returns per-item results in order', async () => {
    const items = []
    const expected: boolean[] = []
    for (let i = 0; i < 40; i++) {
      const { secretKey, publicKey } = generateSigningKeyPair()
      const message = enc(`item ${i}`)
      const signature = await sign(secretKey, message)
      const ok = i % 3 !== 0
      if (!ok) signature[5]! ^= 0x40
      items.push({ publicKey, message, signature })
      expected.push(ok)
    }
    items.push(edgeVectors.map((v) => ({ publicKey: v.pk, message: v.msg, signature: v.sig }))[0]!)
    expected.push(false)
    expect(await verifyBatch(items)).toEqual(expected)
    // Handed-over messages (not copied first) are judged the same, item by item.
    expect(await verifyBatch(items.map((it) => ({ ...it, message: it.message.slice() })), { handOverMessages: true })).toEqual(expected)
    expect(await verifyBatch([])).toEqual([])
    await expect(verifyBatch('nope' as unknown as [])).rejects.toThrow(TypeError)
    // Small batches (Node checks them on this thread) and with Node's verifier off (WebCrypto, as a browser): the same answers.
    for (let at = 0; at < items.length; at += 5) expect(await verifyBatch(items.slice(at, at + 5))).toEqual(expected.slice(at, at + 5))
    expect(setNodeVerifying(false)).toBe(true)
    try {
      expect(await verifyBatch(items.slice(0, 5))).toEqual(expected.slice(0, 5))
      expect(await verifyBatch(items)).toEqual(expected)
    } finally {
      setNodeVerifying(true)
    }
  })

  it('checks with Node synchronously only after the JavaScript prechecks: every edge vector as noble judges it', () => {
    for (const v of edgeVectors) expect(verifyWithNodeSync(v.pk, v.msg, v.sig)).toBe(verifyWithNoble(v.pk, v.msg, v.sig))
  })

  it('range-checks S and R byte by byte exactly as the bigints do, at every boundary and on random bytes', () => {
    const scalarRule = (b: Uint8Array) => bytesToNumberLE(b) < L
    const pointRule = (b: Uint8Array) => {
      const y = bytesToNumberLE(b) & ((1n << 255n) - 1n)
      return y < p && !(b[31]! & 0x80 && (y === 1n || y === p - 1n))
    }
    const values = [0n, 1n, 2n, L - 1n, L, L + 1n, p - 2n, p - 1n, p, p + 1n, (1n << 255n) - 1n, (1n << 256n) - 1n, 1n << 252n, (1n << 248n) - 1n]
    const inputs = values.flatMap((v) => [rawEncoding(v & ((1n << 256n) - 1n), false), rawEncoding(v & ((1n << 255n) - 1n), true)])
    for (let i = 0; i < 2000; i++) {
      const b = randomBytes(32)
      // Random bytes are almost never near a bound: make the top bytes match one a third of the time.
      if (i % 3 === 0) b.set(numberToBytesLE(i % 2 ? L : p, 32).subarray(16 + (i % 16)), 16 + (i % 16))
      inputs.push(b)
    }
    for (const b of inputs) {
      expect(isCanonicalScalar(b)).toBe(scalarRule(b))
      expect(isCanonicalPointEncoding(b)).toBe(pointRule(b))
    }
    expect(isCanonicalScalar(new Uint8Array(31))).toBe(false)
    expect(isCanonicalPointEncoding(new Uint8Array(33))).toBe(false)
    expect(() => isCanonicalScalar('x'.repeat(32) as unknown as Uint8Array)).toThrow(TypeError)
    expect(() => isCanonicalPointEncoding([...new Uint8Array(32)] as unknown as Uint8Array)).toThrow(TypeError)
  })
})

describe('ed25519 backend selection', () => {
  // Each case loads a fresh copy of the module so its once-per-process feature detection reruns.
  const realCrypto = globalThis.crypto
  const realSubtle = realCrypto.subtle
  type Ed25519Module = typeof import('../../src/shared/crypto/ed25519.js')
  const loadWith = async (subtle: Partial<SubtleCrypto> | undefined): Promise<Ed25519Module> => {
    vi.resetModules()
    vi.stubGlobal('crypto', { getRandomValues: realCrypto.getRandomValues.bind(realCrypto), subtle })
    const mod = await import('../../src/shared/crypto/ed25519.js')
    // Verify as a browser does: there, no Node verifier stands before WebCrypto and noble.
    mod.setNodeVerifying(false)
    return mod
  }
  const realBound = (): Partial<SubtleCrypto> => ({
    importKey: realSubtle.importKey.bind(realSubtle),
    verify: realSubtle.verify.bind(realSubtle),
    sign: realSubtle.sign.bind(realSubtle),
  })
  afterEach(() => {
    vi.unstubAllGlobals()
    vi.resetModules()
  })

  async function expectRuleAnswers(mod: Ed25519Module) {
    for (const v of RFC8032) {
      expect(toHex(await mod.sign(hexToBytes(v.sk), hexToBytes(v.msg)))).toBe(v.sig)
      expect(await mod.verify(hexToBytes(v.pk), hexToBytes(v.msg), hexToBytes(v.sig))).toBe(true)
    }
    for (const v of [...edgeVectors, ...tamingVectors]) expect(await mod.verify(v.pk, v.msg, v.sig), v.name).toBe(false)
  }

  it('falls back to noble when WebCrypto has no Ed25519, with the same answers', async () => {
    const mod = await loadWith(undefined)
    expect(await mod.nativeVerifyAvailable()).toBe(false)
    await expectRuleAnswers(mod)
    await expect(mod.verifyWithNative(A, enc('m'), new Uint8Array(64).fill(1))).rejects.toThrow(/unavailable/)
  })

  it('refuses a native backend that fails the self-test (here: one that accepts everything)', async () => {
    const mod = await loadWith({ ...realBound(), verify: async () => true })
    expect(await mod.nativeVerifyAvailable()).toBe(false)
    await expectRuleAnswers(mod)
  })

  it('verifies with Node synchronously where it can, by the same rule, whatever WebCrypto does', async () => {
    let asked = 0
    const mod = await loadWith({
      ...realBound(),
      verify: async () => {
        asked++
        return true
      },
    })
    expect(mod.setNodeVerifying(true)).toBe(true)
    // WebCrypto here would accept everything; Node's verifier answers instead, so nothing forged passes.
    await expectRuleAnswers(mod)
    expect(await mod.verifyBatch([{ publicKey: A, message: enc('m'), signature: new Uint8Array(64).fill(1) }])).toEqual([false])
    expect(asked).toBe(0)
    // A batch of large messages goes the asynchronous way (here WebCrypto fails its self-test: noble answers).
    const big = new Uint8Array(100_000).fill(7)
    const seed = hexToBytes(RFC8032[0]!.sk)
    const signed = await mod.sign(seed, big)
    const forged = signed.slice()
    forged[40]! ^= 1
    const pk = hexToBytes(RFC8032[0]!.pk)
    expect(await mod.verifyBatch([{ publicKey: pk, message: big, signature: signed }, { publicKey: pk, message: big, signature: forged }])).toEqual([true, false])
    expect(asked).toBeGreaterThan(0)
  })

  it('switches to noble for good when native key import fails after a passing self-test', async () => {
    let imports = 0
    const importKey = ((...args: Parameters<SubtleCrypto['importKey']>) => {
      imports++
      // Let the self-test's first import through, then break.
      if (imports > 1 && args[0] === 'raw') return Promise.reject(new Error('import broke'))
      return (realSubtle.importKey as (...a: unknown[]) => Promise<CryptoKey>).apply(realSubtle, args)
    }) as SubtleCrypto['importKey']
    const mod = await loadWith({ ...realBound(), importKey })
    expect(await mod.nativeVerifyAvailable()).toBe(true)
    await expectRuleAnswers(mod)
    expect(await mod.nativeVerifyAvailable()).toBe(false)
  })
})

describe('signature domains', () => {
  it('prefixes payloads with petrel/v1/<domain> and a NUL byte', () => {
    const bytes = signedBytes(SignatureDomain.Message, Uint8Array.of(1, 2))
    expect(new TextDecoder().decode(bytes.subarray(0, 17))).toBe('petrel/v1/message')
    expect(Array.from(bytes.subarray(17))).toEqual([0, 1, 2])
  })

  it('has distinct domain strings', () => {
    const values = Object.values(SignatureDomain)
    expect(new Set(values).size).toBe(values.length)
    expect(values.length).toBe(13)
  })

  it('a signature made for one domain does not verify for any other', async () => {
    const payload = enc('same payload everywhere')
    const domains = Object.values(SignatureDomain)
    for (const d of domains) {
      const s = await signWithDomain(d, seed, payload)
      for (const other of domains) expect(await verifyWithDomain(other, A, payload, s), `${d} → ${other}`).toBe(d === other)
      // Nor as a bare signature over the payload.
      expect(await verify(A, payload, s)).toBe(false)
    }
  })

  it('rejects domain strings that could make the prefix ambiguous', () => {
    for (const d of ['', 'a\0b', 'Message', 'with space', '-lead', 'ünï']) expect(() => signedBytes(d, new Uint8Array())).toThrow(RangeError)
    expect(() => signedBytes(42 as unknown as string, new Uint8Array())).toThrow(TypeError)
  })
})

const expectRejected = (fn: () => unknown, code: ErrorCode = ErrorCode.EnvelopeRejected) => {
  let caught: unknown
  try {
    fn()
  } catch (e) {
    caught = e
  }
  expect(caught).toBeInstanceOf(PetrelError)
  expect((caught as PetrelError).code).toBe(code)
}

describe.each(['native', 'noble'] as const)('aead (XChaCha20-Poly1305), %s backend', (backend) => {
  beforeAll(() => {
    if (!setAeadBackend(backend)) throw new Error(`no ${backend} AEAD on this platform`)
  })
  afterAll(() => {
    setAeadBackend('native')
  })
  const key = randomKey()
  const nonce = randomNonce()
  const aad = enc('header')
  const pt = enc('attack at dawn')

  it('round-trips and produces plaintext + 16-byte tag', () => {
    const ct = seal(key, nonce, pt, aad)
    expect(ct.length).toBe(pt.length + AEAD_TAG_LENGTH)
    expect(open(key, nonce, ct, aad)).toEqual(pt)
    expect(open(key, nonce, seal(key, nonce, new Uint8Array(), new Uint8Array()), new Uint8Array())).toEqual(new Uint8Array())
  })

  it('rejects any flipped byte of ciphertext, nonce, aad or key with envelope_rejected', () => {
    const ct = seal(key, nonce, pt, aad)
    const flipped = (b: Uint8Array, i: number) => {
      const c = new Uint8Array(b)
      c[i]! ^= 0x01
      return c
    }
    for (let i = 0; i < ct.length; i++) expectRejected(() => open(key, nonce, flipped(ct, i), aad))
    for (let i = 0; i < nonce.length; i++) expectRejected(() => open(key, flipped(nonce, i), ct, aad))
    for (let i = 0; i < aad.length; i++) expectRejected(() => open(key, nonce, ct, flipped(aad, i)))
    for (let i = 0; i < key.length; i++) expectRejected(() => open(flipped(key, i), nonce, ct, aad))
    expectRejected(() => open(key, nonce, ct.subarray(0, ct.length - 1), aad))
    expectRejected(() => open(key, nonce, ct.subarray(0, 15), aad))
    expectRejected(() => open(key, nonce, ct, new Uint8Array()))
  })

  it('checks argument types and lengths', () => {
    expect(() => seal(key.subarray(1), nonce, pt, aad)).toThrow(RangeError)
    expect(() => seal(key, nonce.subarray(1), pt, aad)).toThrow(RangeError)
    expect(() => open(key, new Uint8Array(12), pt, aad)).toThrow(RangeError)
    expect(() => seal('k' as unknown as Uint8Array, nonce, pt, aad)).toThrow(TypeError)
    expect(() => seal(key, nonce, 'pt' as unknown as Uint8Array, aad)).toThrow(TypeError)
  })

  it('draws fresh random nonces and keys', () => {
    expect(randomNonce().length).toBe(24)
    expect(toHex(randomNonce())).not.toBe(toHex(randomNonce()))
    expect(toHex(randomKey())).not.toBe(toHex(randomKey()))
  })

  it('draws random bytes past getRandomValues’ 65,536-byte limit, every chunk filled', () => {
    const big = randomBytes(200_000)
    expect(big.length).toBe(200_000)
    // A chunk left unfilled would be 64 KiB of zeros: no 1 KiB window of random bytes is.
    for (let at = 0; at + 1024 <= big.length; at += 1024) expect(big.subarray(at, at + 1024).some((b) => b !== 0)).toBe(true)
    expect(big.subarray(196_608).some((b) => b !== 0)).toBe(true)
  })
})

describe('aead backends', () => {
  afterAll(() => {
    setAeadBackend('native')
  })
  const withBackend = <T>(backend: 'native' | 'noble', fn: () => T): T => {
    setAeadBackend(backend)
    return fn()
  }

  it('uses the native ChaCha20-Poly1305 core on Node', () => {
    expect(aeadBackend()).toBe('native')
  })

  it('matches the XChaCha20-Poly1305 test vector of draft-irtf-cfrg-xchacha A.3.1 on both', () => {
    const key = fromHex('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f')
    const nonce = fromHex('404142434445464748494a4b4c4d4e4f5051525354555657')
    const aad = fromHex('50515253c0c1c2c3c4c5c6c7')
    const pt = enc("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.")
    const expected =
      'bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e' +
      'c0875924c1c7987947deafd8780acf49'
    for (const backend of ['native', 'noble'] as const) {
      const ct = withBackend(backend, () => seal(key, nonce, pt, aad))
      expect(toHex(ct), backend).toBe(expected)
      expect(withBackend(backend, () => open(key, nonce, ct, aad)), backend).toEqual(pt)
    }
  })

  it('seals a step at a time to the same bytes as in one call, on both, at lengths around the step, pausing between steps', async () => {
    for (const backend of ['native', 'noble'] as const) {
      setAeadBackend(backend)
      for (const length of [0, 1, 63, 64, 65, 1000, 4096, 4097, 10_000]) {
        const key = randomKey()
        const nonce = randomNonce()
        const aad = randomBytes(13)
        const plain = randomBytes(length)
        const out = new Uint8Array(length + AEAD_TAG_LENGTH + 7)
        let pauses = 0
        await sealInSteps(key, nonce, plain, aad, out, 3, 1000, async () => {
          pauses++
        })
        expect(toHex(out.subarray(3, 3 + length + AEAD_TAG_LENGTH)), `${backend} ${length}`).toBe(toHex(seal(key, nonce, plain, aad)))
        expect(out.subarray(0, 3)).toEqual(new Uint8Array(3))
        if (backend === 'native') expect(pauses).toBe(Math.max(0, Math.ceil(length / 1000) - 1))
      }
      await expect(sealInSteps(randomKey(), randomNonce(), new Uint8Array(10), new Uint8Array(0), new Uint8Array(25), 0)).rejects.toThrow(RangeError)
    }
    setAeadBackend('native')
  })

  it('keeps each step-wise seal its own while others seal and open under other keys between its steps', async () => {
    const plain = randomBytes(5000)
    const jobs = [0, 1, 2].map(() => ({ key: randomKey(), nonce: randomNonce(), aad: randomBytes(9), out: new Uint8Array(5000 + AEAD_TAG_LENGTH) }))
    // Every pause seals and opens something else: the subkey derivation's arrays are shared.
    const busy = async () => {
      const key = randomKey()
      const nonce = randomNonce()
      expect(open(key, nonce, seal(key, nonce, plain.subarray(0, 99), jobs[0]!.aad), jobs[0]!.aad)).toEqual(plain.subarray(0, 99))
      await new Promise((r) => setTimeout(r, 0))
    }
    await Promise.all(jobs.map((j) => sealInSteps(j.key, j.nonce, plain, j.aad, j.out, 0, 1000, busy)))
    for (const j of jobs) {
      expect(toHex(j.out)).toBe(toHex(seal(j.key, j.nonce, plain, j.aad)))
      expect(open(j.key, j.nonce, j.out, j.aad)).toEqual(plain)
    }
  })

  it('seals on one and opens on the other, at every length from 0 to 300 bytes', () => {
    for (let length = 0; length <= 300; length++) {
      const key = randomKey()
      const nonce = randomNonce()
      const aad = randomNonce().subarray(0, length % 40)
      const pt = new Uint8Array(length).map((_, i) => (i * 7 + length) & 0xff)
      const a = withBackend('native', () => seal(key, nonce, pt, aad))
      const b = withBackend('noble', () => seal(key, nonce, pt, aad))
      expect(toHex(a)).toBe(toHex(b))
      expect(withBackend('noble', () => open(key, nonce, a, aad))).toEqual(pt)
      expect(withBackend('native', () => open(key, nonce, b, aad))).toEqual(pt)
    }
  })

  it('refuses the same tampered inputs on both, with envelope_rejected', () => {
    const key = randomKey()
    const nonce = randomNonce()
    const ct = seal(key, nonce, enc('the same rule on every path'), enc('aad'))
    for (let i = 0; i < ct.length; i++) {
      const bad = new Uint8Array(ct)
      bad[i]! ^= 0x80
      for (const backend of ['native', 'noble'] as const) expectRejected(() => withBackend(backend, () => open(key, nonce, bad, enc('aad'))))
    }
  })
})

describe('key wrapping (X25519 + HKDF + XChaCha20-Poly1305)', () => {
  /** The known small-order u-coordinates, as encoded (p and p + 1 reduce to 0 and 1). */
  const P25519 = 2n ** 255n - 19n
  const lowOrderU = [
    0n,
    1n,
    P25519 - 1n,
    P25519,
    P25519 + 1n,
    325606250916557431795983626356110631294008115727848805560023387167927233504n,
    39382357235489614581723060781553021112529911719440698176882885853963445705823n,
  ]
  const recipient = generateAgreementKeyPair()
  const context = enc('conversation-1/epoch-3')
  const key = randomKey()

  it('round-trips with the versioned 105-byte format', () => {
    const wrapped = wrapKey(key, recipient.publicKey, context)
    expect(wrapped.length).toBe(WRAPPED_KEY_LENGTH)
    expect(WRAPPED_KEY_LENGTH).toBe(1 + 32 + 24 + 48)
    expect(wrapped[0]).toBe(1)
    expect(unwrapKey(wrapped, recipient.secretKey, context)).toEqual(key)
    // Fresh ephemeral key and nonce each time.
    expect(toHex(wrapKey(key, recipient.publicKey, context))).not.toBe(toHex(wrapped))
  })

  it('rejects the wrong recipient and the wrong context', () => {
    const wrapped = wrapKey(key, recipient.publicKey, context)
    expectRejected(() => unwrapKey(wrapped, generateAgreementKeyPair().secretKey, context))
    expectRejected(() => unwrapKey(wrapped, recipient.secretKey, enc('conversation-1/epoch-4')))
  })

  it('rejects any tampered byte, a wrong version and a wrong length', () => {
    const wrapped = wrapKey(key, recipient.publicKey, context)
    for (let i = 0; i < wrapped.length; i++) {
      const t = new Uint8Array(wrapped)
      t[i]! ^= 0x80
      expectRejected(() => unwrapKey(t, recipient.secretKey, context))
    }
    const v2 = new Uint8Array(wrapped)
    v2[0] = 2
    expectRejected(() => unwrapKey(v2, recipient.secretKey, context))
    expectRejected(() => unwrapKey(wrapped.subarray(0, 104), recipient.secretKey, context))
    expectRejected(() => unwrapKey(concatBytes(wrapped, Uint8Array.of(0)), recipient.secretKey, context))
    expectRejected(() => unwrapKey(new Uint8Array(), recipient.secretKey, context))
  })

  it('rejects small-order recipient keys when wrapping and small-order ephemeral keys when unwrapping', () => {
    for (const u of lowOrderU) {
      const pub = numberToBytesLE(u, 32)
      expectRejected(() => wrapKey(key, pub, context), ErrorCode.InvalidArgument)
      const forged = wrapKey(key, recipient.publicKey, context)
      forged.set(pub, 1)
      expectRejected(() => unwrapKey(forged, recipient.secretKey, context))
    }
  })

  it('wraps one key for many recipients with one ephemeral key, each opened alone', () => {
    const devices = Array.from({ length: 5 }, () => generateAgreementKeyPair())
    const wrapped = wrapKeyForAll(
      key,
      devices.map((d) => d.publicKey),
      context,
    )
    expect(wrapped).toHaveLength(5)
    const ephemeral = toHex(wrapped[0]!.subarray(1, 33))
    wrapped.forEach((w, i) => {
      expect(w.length).toBe(WRAPPED_KEY_LENGTH)
      expect(toHex(w.subarray(1, 33))).toBe(ephemeral)
      expect(unwrapKey(w, devices[i]!.secretKey, context)).toEqual(key)
      // Another recipient's wrap does not open with this device's secret.
      expectRejected(() => unwrapKey(wrapped[(i + 1) % 5]!, devices[i]!.secretKey, context))
    })
    // Each wrap has its own nonce, and the next call its own ephemeral key.
    expect(new Set(wrapped.map((w) => toHex(w.subarray(33, 57)))).size).toBe(5)
    expect(toHex(wrapKeyForAll(key, [devices[0]!.publicKey], context)[0]!.subarray(1, 33))).not.toBe(ephemeral)
    expect(wrapKeyForAll(key, [], context)).toEqual([])
  })

  it('tells small-order agreement keys as sharedSecret refuses them: the seven known, their top-bit twins, no random key', () => {
    const mine = generateAgreementKeyPair().secretKey
    for (const u of lowOrderU) {
      for (const pub of [numberToBytesLE(u, 32), numberToBytesLE(u + 2n ** 255n, 32)]) {
        expect(isSmallOrderAgreementKey(pub)).toBe(true)
        expectRejected(() => sharedSecret(mine, pub))
      }
    }
    for (let i = 0; i < 50; i++) expect(isSmallOrderAgreementKey(generateAgreementKeyPair().publicKey)).toBe(false)
    expect(() => isSmallOrderAgreementKey(new Uint8Array(31))).toThrow(RangeError)
  })

  it('wraps for nobody when one recipient key is of small order', () => {
    const ok = generateAgreementKeyPair().publicKey
    expectRejected(() => wrapKeyForAll(key, [ok, new Uint8Array(32), ok], context), ErrorCode.InvalidArgument)
  })

  it('checks argument types and lengths', () => {
    expect(() => wrapKeyForAll(key, [recipient.publicKey, recipient.publicKey.subarray(1)], context)).toThrow(RangeError)
    expect(() => wrapKey(key.subarray(1), recipient.publicKey, context)).toThrow(RangeError)
    expect(() => wrapKey(key, recipient.publicKey.subarray(1), context)).toThrow(RangeError)
    expect(() => wrapKey(key, recipient.publicKey, 'ctx' as unknown as Uint8Array)).toThrow(TypeError)
    expect(() => unwrapKey(new Uint8Array(105), new Uint8Array(31), context)).toThrow(RangeError)
  })
})

describe('x25519 backends', () => {
  it('makes key pairs under garbage-collection pressure without hanging (Node 20 deadlocked exporting a generated key while a finished generation job was collected)', async () => {
    // In a process of its own: a deadlocked thread cannot time itself out. generateKeyPairSync
    // and a JWK export hung in this loop in most runs (7 of 9 here; the deadlock needs a GC at
    // the wrong moment, so a run of the old code may pass).
    const crypto = fileURLToPath(new URL('../../src/shared/crypto/index.ts', import.meta.url))
    const script = [
      `import { generateAgreementKeyPair } from ${JSON.stringify(crypto)}`,
      'const keep = []',
      'for (let i = 0; i < 20000; i++) { keep.push(generateAgreementKeyPair()); if (keep.length > 1000) keep.length = 0 }',
      "console.log('made 20000')",
    ].join('\n')
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), 45_000)
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
    clearTimeout(timer)
    expect(out.trim(), 'the child hung (killed after 45 s) or failed').toBe('made 20000')
    expect(code).toBe(0)
  }, 60_000)

  it('uses Node\'s OpenSSL here and agrees with noble (the browsers\' path) on every input, low-order and non-canonical ones too', () => {
    expect(x25519Backend()).toBe('node')
    const outcome = (f: () => Uint8Array): string => {
      try {
        return toHex(f())
      } catch (err) {
        return `refused: ${(err as PetrelError).code ?? 'other'}`
      }
    }
    const P25519 = 2n ** 255n - 19n
    const peers: Uint8Array[] = [
      ...Array.from({ length: 50 }, () => generateAgreementKeyPair().publicKey),
      // The top bit set (ignored by RFC 7748), values past p (reduced), and low-order points.
      ...Array.from({ length: 20 }, () => {
        const k = generateAgreementKeyPair().publicKey
        k[31]! |= 0x80
        return k
      }),
      ...[0n, 1n, P25519 - 1n, P25519, P25519 + 1n, P25519 + 9n, 2n ** 255n - 1n].map((u) => numberToBytesLE(u, 32)),
      ...Array.from({ length: 20 }, () => randomBytes(32)),
    ]
    for (let i = 0; i < 20; i++) {
      const mine = generateAgreementKeyPair()
      // A secret made elsewhere (noble's path) and one of ours give the same public key.
      expect(toHex(agreementPublicKeyFromSecret(mine.secretKey))).toBe(toHex(x25519.getPublicKey(mine.secretKey)))
      const raw = randomBytes(32)
      expect(toHex(agreementPublicKeyFromSecret(raw))).toBe(toHex(x25519.getPublicKey(raw)))
      for (const peer of peers) {
        const native = outcome(() => sharedSecret(mine.secretKey, peer))
        const noble = outcome(() => {
          const s = sharedSecretNoble(mine.secretKey, peer)
          if (s.every((b) => b === 0)) throw new PetrelError(ErrorCode.EnvelopeRejected, 'zero')
          return s
        })
        expect(native.startsWith('refused') ? 'refused' : native).toBe(noble.startsWith('refused') ? 'refused' : noble)
      }
    }
  })
})

describe('hash and encoding helpers', () => {
  it('base64url matches RFC 4648 §10 vectors (unpadded, url alphabet)', () => {
    const cases: Array<[string, string]> = [
      ['', ''],
      ['f', 'Zg'],
      ['fo', 'Zm8'],
      ['foo', 'Zm9v'],
      ['foob', 'Zm9vYg'],
      ['fooba', 'Zm9vYmE'],
      ['foobar', 'Zm9vYmFy'],
    ]
    for (const [raw, b64] of cases) {
      expect(toBase64Url(enc(raw))).toBe(b64)
      expect(new TextDecoder().decode(fromBase64Url(b64))).toBe(raw)
    }
    expect(toBase64Url(Uint8Array.of(0xfb, 0xff))).toBe('-_8')
    expect(Array.from(fromBase64Url('-_8'))).toEqual([0xfb, 0xff])
  })

  it('sha256 gives the FIPS 180-4 vectors and the same digest as noble (the browsers\' path) for every length', () => {
    expect(toHex(sha256(enc('abc')))).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
    expect(toHex(sha256(enc('')))).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
    for (const n of [0, 1, 55, 56, 63, 64, 65, 1000, 70_000]) {
      const b = crypto.getRandomValues(new Uint8Array(Math.min(n, 65_536)))
      const digest = sha256(b)
      expect(digest).toEqual(sha256Noble(b))
      // Its own buffer: not a view of a pool another digest writes into.
      expect(digest.buffer.byteLength).toBe(32)
    }
    expect(() => sha256('abc' as unknown as Uint8Array)).toThrow(TypeError)
    // On Node, OpenSSL's: a silent fall back to noble would cost every batch its hashing time.
    expect(sha256Backend()).toBe('node')
  })

  it('hex agrees with Buffer on every short length and across the chunk boundary of long inputs', () => {
    for (const n of [0, 1, 2, 31, 32, 33, 8191, 8192, 8193, 20_000]) {
      const b = crypto.getRandomValues(new Uint8Array(n))
      expect(toHex(b)).toBe(Buffer.from(b).toString('hex'))
      expect(fromHex(toHex(b))).toEqual(b)
    }
  })

  it('base64url round-trips every length and agrees with Buffer', () => {
    for (let n = 0; n < 70; n++) {
      const b = crypto.getRandomValues(new Uint8Array(n))
      const s = toBase64Url(b)
      expect(s).toBe(Buffer.from(b).toString('base64url'))
      expect(fromBase64Url(s)).toEqual(b)
    }
  })

  it('base64url decoding is strict', () => {
    const bad = [
      'Zg==', // padding
      'Zg=',
      'Z', // impossible length
      'Zm9vY',
      'Zh', // non-zero trailing bits (a second encoding of 'f')
      'Zm9', // 'fo' is Zm8
      'Zm+v', // standard alphabet
      'Zm/v',
      ' Zg',
      'Zg\n',
      'Zm9v\u00e9A',
      'Zm9v.A',
    ]
    for (const s of bad) expectRejected(() => fromBase64Url(s), ErrorCode.Malformed)
    expect(() => fromBase64Url(undefined as unknown as string)).toThrow(TypeError)
  })

  it('matchesBase64Url accepts exactly the canonical encoding of the bytes, for every length', () => {
    for (let n = 0; n < 70; n++) {
      const b = crypto.getRandomValues(new Uint8Array(n))
      const s = toBase64Url(b)
      expect(matchesBase64Url(b, s)).toBe(true)
      // Every single-character change is refused, and so is every other length.
      for (let i = 0; i < s.length; i++) {
        const other = s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1)
        expect(matchesBase64Url(b, other)).toBe(false)
      }
      expect(matchesBase64Url(b, `${s}A`)).toBe(false)
      if (n > 0) expect(matchesBase64Url(b.subarray(1), s)).toBe(false)
    }
    // The strict decoder's rejects are rejected here too, for the bytes they would alias.
    const f = new TextEncoder().encode('f')
    const fo = new TextEncoder().encode('fo')
    expect(matchesBase64Url(f, 'Zg')).toBe(true)
    for (const s of ['Zh', 'Zg=', 'Z+', ' g', 'Z\u00e9']) expect(matchesBase64Url(f, s)).toBe(false)
    expect(matchesBase64Url(fo, 'Zm8')).toBe(true)
    expect(matchesBase64Url(fo, 'Zm9')).toBe(false)
  })

  it('hex is lowercase and strict', () => {
    expect(toHex(Uint8Array.of(0, 15, 16, 255))).toBe('000f10ff')
    expect(Array.from(fromHex('000f10ff'))).toEqual([0, 15, 16, 255])
    for (const s of ['abc', 'zz', 'AB', '0x00', ' 0']) expectRejected(() => fromHex(s), ErrorCode.Malformed)
  })

  it('constantTimeEqual compares contents and lengths', () => {
    expect(constantTimeEqual(Uint8Array.of(1, 2), Uint8Array.of(1, 2))).toBe(true)
    expect(constantTimeEqual(Uint8Array.of(1, 2), Uint8Array.of(1, 3))).toBe(false)
    expect(constantTimeEqual(Uint8Array.of(1, 2), Uint8Array.of(1, 2, 3))).toBe(false)
    expect(constantTimeEqual(new Uint8Array(), new Uint8Array())).toBe(true)
  })
})
