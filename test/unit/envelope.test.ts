/** The sealed envelope: what binds it to its room, epoch, key and sender. */
import { describe, expect, it } from 'vitest'
import { generateSigningKeyPair, randomKey, verifyBatch } from '../../src/shared/crypto/index.js'
import { decryptEnvelope, readEnvelope, sealEnvelope, signedEnvelopeBytes, verifyEnvelope } from '../../src/shared/envelope.js'

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
