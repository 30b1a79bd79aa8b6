/** The sealed envelope: what binds it to its room, epoch, key and sender. */
import * as encoding from 'lib0/encoding'
import { describe, expect, it } from 'vitest'
import { generateSigningKeyPair, randomBytes, randomKey, seal as aeadSeal, SignatureDomain, setAeadBackend, signWithDomain, toHex, verifyBatch } from '../../src/shared/crypto/index.js'
import { decryptEnvelope, keyCheckOf, openEnvelope, readEnvelope, sealEnvelope, signedEnvelopeBytes, type SnapshotPart, verifyEnvelope } from '../../src/shared/envelope.js'

const sender = generateSigningKeyPair()
const room = 'room-under-test-000001'
const seal = (epoch: number, key: Uint8Array, r = room) =>
  sealEnvelope({ room: r, epoch, key, senderDevicePub: sender.publicKey, senderDeviceSecret: sender.secretKey, update: Uint8Array.of(1, 2, 3) })

describe('envelope', () => {
  it('opens under the key and epoch it was sealed with', async () => {
    const key = randomKey()
    const h = readEnvelope(await seal(3, key))
    expect(await verifyEnvelope(room, h)).toBe(true)
    expect(decryptEnvelope(room, h, key)).toEqual(Uint8Array.of(1, 2, 3))
  })

  it('rejects a wrong epoch: relabelled (signature fails) or sealed by a buggy sender under another epoch’s key (decryption fails)', async () => {
    const key0 = randomKey()
    const key1 = randomKey()
    const relabelled = { ...readEnvelope(await seal(0, key0)), epoch: 1 }
    expect(await verifyEnvelope(room, relabelled)).toBe(false)
    // Signed as epoch 1 but encrypted with epoch 0's key: a receiver opens epoch 1 with key1.
    const confused = readEnvelope(await seal(1, key0))
    expect(await verifyEnvelope(room, confused)).toBe(true)
    expect(() => decryptEnvelope(room, confused, key1)).toThrowError(expect.objectContaining({ code: 'envelope_rejected' }))
  })

  it('rejects an envelope moved to another room', async () => {
    const key = randomKey()
    const h = readEnvelope(await seal(0, key))
    expect(await verifyEnvelope('another-room-000000001', h)).toBe(false)
    expect(() => decryptEnvelope('another-room-000000001', h, key)).toThrowError(expect.objectContaining({ code: 'envelope_rejected' }))
  })

  it('draws a fresh nonce for every envelope unless a test fixes one', async () => {
    const key = randomKey()
    const nonces = new Set<string>()
    for (let i = 0; i < 200; i++) nonces.add(Buffer.from(readEnvelope(await seal(0, key)).nonce).toString('hex'))
    expect(nonces.size).toBe(200)
  })
})

/** The grammar in envelope.ts, written field by field with lib0's encoder: what sealEnvelope must produce. */
async function byTheGrammar(epoch: number, key: Uint8Array, nonce: Uint8Array, update: Uint8Array, snapshot?: SnapshotPart): Promise<Uint8Array> {
  const plain = encoding.createEncoder()
  encoding.writeUint8(plain, snapshot ? 2 : 1)
  if (snapshot) {
    encoding.writeVarUint8Array(plain, snapshot.snapshotId)
    encoding.writeVarUint(plain, snapshot.coversSeq)
    encoding.writeVarUint(plain, snapshot.part)
    encoding.writeVarUint(plain, snapshot.parts)
  }
  encoding.writeVarUint8Array(plain, update)
  const aad = encoding.createEncoder()
  encoding.writeVarString(aad, 'petrel/v1/envelope')
  encoding.writeVarString(aad, room)
  encoding.writeVarUint(aad, epoch)
  encoding.writeVarUint8Array(aad, keyCheckOf(key))
  encoding.writeVarUint8Array(aad, sender.publicKey)
  const ciphertext = aeadSeal(key, nonce, encoding.toUint8Array(plain), encoding.toUint8Array(aad))
  const signed = encoding.createEncoder()
  encoding.writeUint8Array(signed, encoding.toUint8Array(aad))
  encoding.writeVarUint8Array(signed, nonce)
  encoding.writeVarUint8Array(signed, ciphertext)
  const signature = await signWithDomain(SignatureDomain.Envelope, sender.secretKey, encoding.toUint8Array(signed))
  const e = encoding.createEncoder()
  encoding.writeUint8(e, 1)
  encoding.writeVarUint(e, epoch)
  encoding.writeVarUint8Array(e, keyCheckOf(key))
  encoding.writeVarUint8Array(e, sender.publicKey)
  encoding.writeVarUint8Array(e, nonce)
  encoding.writeVarUint8Array(e, ciphertext)
  encoding.writeVarUint8Array(e, signature)
  return encoding.toUint8Array(e)
}

describe('envelope bytes', () => {
  it('are the grammar’s, field by field, for updates and snapshot parts across varUint length boundaries, on both cipher backends', async () => {
    const key = randomKey()
    for (const backend of ['native', 'noble'] as const) {
      expect(setAeadBackend(backend)).toBe(true)
      try {
        for (const size of [0, 1, 111, 112, 127, 128, 16_367, 16_383, 16_384, 300_000]) {
          for (const epoch of [0, 127, 128, 70_000]) {
            const update = randomBytes(size)
            const nonce = randomBytes(24)
            const snapshot = { snapshotId: randomBytes(16), coversSeq: size * 3, part: epoch % 5, parts: 5 + (epoch % 200) }
            const input = { room, epoch, key, senderDevicePub: sender.publicKey, senderDeviceSecret: sender.secretKey, update, nonce }
            expect(toHex(await sealEnvelope(input))).toBe(toHex(await byTheGrammar(epoch, key, nonce, update)))
            const part = await sealEnvelope({ ...input, snapshot })
            expect(toHex(part)).toBe(toHex(await byTheGrammar(epoch, key, nonce, update, snapshot)))
            const opened = openEnvelope(room, readEnvelope(part), key)
            expect(opened.kind === 'snapshot' && toHex(opened.bytes) === toHex(update) && opened.coversSeq === snapshot.coversSeq).toBe(true)
          }
        }
      } finally {
        setAeadBackend('native')
      }
    }
  })
})

describe('signed envelope bytes', () => {
  it('are exactly what the sender signed, across every varUint length boundary', async () => {
    for (const size of [0, 1, 100, 111, 112, 127, 128, 16_367, 16_368, 16_383, 16_384, 70_000]) {
      const env = await sealEnvelope({ room, epoch: 300, key: randomKey(), senderDevicePub: sender.publicKey, senderDeviceSecret: sender.secretKey, update: new Uint8Array(size) })
      const h = readEnvelope(env)
      const [ok] = await verifyBatch([{ publicKey: h.senderDevicePub, message: signedEnvelopeBytes(room, h), signature: h.signature }])
      expect(ok).toBe(true)
      expect(await verifyEnvelope(room, h)).toBe(true)
    }
  })
})
