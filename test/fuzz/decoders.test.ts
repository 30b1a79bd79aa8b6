/**
 * Every decoder of network bytes: round-trips what the encoder writes, and rejects any
 * truncated, flipped or random input with a PetrelError — never another exception, never a
 * hang. (fast-check properties; the seed is printed on failure and replays.)
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { decodeInviteToken } from '../../src/client/invite-token.js'
import { generateSigningKeyPair, randomKey } from '../../src/shared/crypto/index.js'
import { decryptEnvelope, readEnvelope, sealEnvelope, verifyEnvelope } from '../../src/shared/envelope.js'
import { PetrelError } from '../../src/shared/errors.js'
import { readAdmission, readAddBody, readCertificate, readRecord, readSnapshotBody, readUnlinkBody } from '../../src/shared/records.js'
import { openKeyBundle, sealKeyBundle } from '../../src/shared/key-bundle.js'
import { generateAgreementKeyPair } from '../../src/shared/crypto/index.js'
import { decodeLinkPayload, encodeLinkPayload, newLinkSecret, openLinkMessage, readAnswer, readOffer, sealLinkMessage } from '../../src/client/device-link.js'
import { readPublicIdentity } from '../../src/client/public-identity.js'
import { decodeMessageSeqs, decodeSentEnvelope, decodeVerification } from '../../src/client/conversation-record.js'
import { openEnvelope } from '../../src/shared/envelope.js'
import {
  readAck,
  readDeviceAck,
  readReceipts,
  readRefused,
  readRows,
  RoomMessage,
  SyncStep,
  snapshotPartMessage,
  writeAck,
  writeDeviceAck,
  writeReceipts,
  writeRefused,
  writeRows,
  writeSyncMessage,
  WantParts,
  writeWantParts,
} from '../../src/shared/room-messages.js'
import { type Frame, FrameType, readFrame, StrictReader, withFeaturesQuery, writeFrame } from '../../src/shared/wire.js'

const RUNS = Number(process.env.PETREL_FUZZ_RUNS ?? 300)

/** Run `decode`; it may succeed or throw a PetrelError, nothing else. */
function onlyPetrelErrors(decode: () => unknown): void {
  try {
    decode()
  } catch (err) {
    if (!(err instanceof PetrelError)) throw new Error(`decoder threw a non-PetrelError: ${String(err)}`)
  }
}

const roomId = fc.stringMatching(/^[A-Za-z0-9_-]{16,64}$/)
const bytes = (max: number) => fc.uint8Array({ maxLength: max })
const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({ type: fc.constant(FrameType.Hello), challenge: fc.uint8Array({ minLength: 32, maxLength: 32 }), maxFrameBytes: fc.nat(), maxEnvelopeBytes: fc.nat() }),
  fc.record({ type: fc.constant(FrameType.Auth), certificate: bytes(200), signature: fc.uint8Array({ minLength: 64, maxLength: 64 }) }),
  fc.constant({ type: FrameType.Ready } as const),
  fc.record({ type: fc.constant(FrameType.Open), room: roomId, admission: bytes(300) }),
  fc.record({ type: fc.constant(FrameType.Opened), room: roomId }),
  fc.record({ type: fc.constant(FrameType.Denied), room: roomId, reason: fc.nat({ max: 1000 }), message: fc.string({ maxLength: 100 }) }),
  fc.record({ type: fc.constant(FrameType.Close), room: roomId }),
  fc.record({ type: fc.constant(FrameType.Room), room: roomId, message: fc.uint8Array({ minLength: 1, maxLength: 300 }) }),
  fc.constant({ type: FrameType.Heartbeat } as const),
  fc.record({ type: fc.constant(FrameType.Notice), reason: fc.nat({ max: 1000 }), message: fc.string({ maxLength: 100 }) }),
  fc.record({ type: fc.constant(FrameType.Rooms), rooms: fc.array(roomId, { maxLength: 20 }) }),
  fc.record({ type: fc.constant(FrameType.Features), features: fc.nat({ max: 0xffffffff }) }),
) as fc.Arbitrary<Frame>

describe('frame decoder', () => {
  it('reads a features frame with bits past 32 and fields after them (a later relay) without failing', () => {
    const later = Uint8Array.from([...writeFrame({ type: FrameType.Features, features: 1 }).subarray(0, 2), 0x81, 0x80, 0x80, 0x80, 0x10, 7, 7])
    expect(readFrame(later)).toEqual({ type: FrameType.Features, features: 2 ** 32 + 1 })
  })
  it('round-trips every frame type', () => {
    fc.assert(
      fc.property(frameArb, (f) => {
        expect(readFrame(writeFrame(f))).toEqual(f)
      }),
      { numRuns: RUNS },
    )
  })
  it('rejects every strict prefix of a frame cleanly (room frames excepted: their payload runs to the end)', () => {
    fc.assert(
      fc.property(frameArb, (f) => {
        const b = writeFrame(f)
        for (let n = 0; n < b.length; n++) onlyPetrelErrors(() => readFrame(b.subarray(0, n)))
        if (f.type !== FrameType.Room) for (let n = 0; n < b.length; n++) expect(() => readFrame(b.subarray(0, n))).toThrow(PetrelError)
      }),
      { numRuns: RUNS },
    )
  })
  it('throws nothing but PetrelError on flipped bytes and on random bytes', () => {
    fc.assert(
      fc.property(frameArb, fc.nat(), fc.integer({ min: 1, max: 255 }), (f, at, mask) => {
        const b = writeFrame(f).slice()
        b[at % b.length]! ^= mask
        onlyPetrelErrors(() => readFrame(b))
      }),
      { numRuns: RUNS },
    )
    fc.assert(fc.property(bytes(500), (b) => onlyPetrelErrors(() => readFrame(b))), { numRuns: RUNS })
  })
})

describe('snapshot-part and the features query', () => {
  it('turns a sync update into snapshot-part carrying the same update, which the relay reads back whole', () => {
    fc.assert(
      fc.property(bytes(3000), (update) => {
        const m = snapshotPartMessage(writeSyncMessage(SyncStep.Update, update))
        const r = new StrictReader(m)
        expect(r.varUint(255)).toBe(RoomMessage.SnapshotPart)
        expect(r.varBytes(m.length)).toEqual(update)
        r.end()
      }),
      { numRuns: RUNS },
    )
  })
  it('writes want-parts as its three values, true and false standing for whole and spare', () => {
    expect([...writeWantParts(true)]).toEqual([RoomMessage.WantParts, WantParts.Whole])
    expect([...writeWantParts(false)]).toEqual([RoomMessage.WantParts, WantParts.Spare])
    expect([...writeWantParts(WantParts.SpareUnlessNeeded)]).toEqual([108, 2])
    expect([WantParts.Spare, WantParts.Whole]).toEqual([0, 1])
  })
  it('adds the features query to any relay URL, after its path and query, and drops a fragment (WebSocket refuses one)', () => {
    expect(withFeaturesQuery('ws://127.0.0.1:8787')).toBe('ws://127.0.0.1:8787?features=1')
    expect(withFeaturesQuery('wss://relay.example/')).toBe('wss://relay.example/?features=1')
    expect(withFeaturesQuery('wss://relay.example/?node=2')).toBe('wss://relay.example/?node=2&features=1')
    expect(withFeaturesQuery('wss://relay.example/#x')).toBe('wss://relay.example/?features=1')
    expect(new URL(withFeaturesQuery('ws://h:1')).searchParams.get('features')).toBe('1')
  })
})

describe('relay message decoders', () => {
  const range = fc.record({ client: fc.nat({ max: 0xffffffff }), clock: fc.nat(), len: fc.nat() })
  const receipt = fc.record({ device: fc.string({ maxLength: 43 }), stored: fc.nat(), read: fc.nat(), storedAt: fc.nat(), readAt: fc.nat() })
  it('round-trip ack, refused, rows, receipts and device-ack', () => {
    fc.assert(
      fc.property(fc.nat(), fc.array(range, { maxLength: 5 }), (seq, ranges) => {
        expect(readAck(new StrictReader(writeAck(seq, ranges).subarray(1)))).toEqual({ seq, ranges })
      }),
      { numRuns: RUNS },
    )
    fc.assert(
      fc.property(fc.nat({ max: 1000 }), fc.string({ maxLength: 50 }), fc.array(range, { maxLength: 5 }), (reason, message, ranges) => {
        expect(readRefused(new StrictReader(writeRefused(reason, message, ranges).subarray(1)))).toEqual({ reason, message, ranges })
      }),
      { numRuns: RUNS },
    )
    fc.assert(
      fc.property(fc.array(fc.record({ seq: fc.nat(), client: fc.nat({ max: 0xffffffff }), clock: fc.nat(), len: fc.nat() }), { maxLength: 5 }), bytes(100), (index, update) => {
        const got = readRows(new StrictReader(writeRows(index, update).subarray(1)))
        expect(got.index).toEqual(index)
        expect([...got.update]).toEqual([...update])
      }),
      { numRuns: RUNS },
    )
    fc.assert(
      fc.property(fc.array(receipt, { maxLength: 5 }), (entries) => {
        expect(readReceipts(new StrictReader(writeReceipts(entries).subarray(1)))).toEqual(entries)
      }),
      { numRuns: RUNS },
    )
    fc.assert(
      fc.property(fc.string({ maxLength: 43 }), fc.nat(), fc.nat(), (device, stored, read) => {
        expect(readDeviceAck(new StrictReader(writeDeviceAck(device, stored, read).subarray(1)))).toEqual({ device, stored, read })
      }),
      { numRuns: RUNS },
    )
  })
  it('throw nothing but PetrelError on random bytes', () => {
    for (const read of [readAck, readRefused, readRows, readReceipts, readDeviceAck]) {
      fc.assert(fc.property(bytes(300), (b) => onlyPetrelErrors(() => read(new StrictReader(b)))), { numRuns: RUNS })
    }
  })
})

describe('records, certificates, admissions and invites', () => {
  it('throw nothing but PetrelError on random bytes', () => {
    fc.assert(
      fc.property(bytes(400), (b) => {
        onlyPetrelErrors(() => readRecord(b))
        onlyPetrelErrors(() => readCertificate(b))
        onlyPetrelErrors(() => readAdmission(b))
      }),
      { numRuns: RUNS },
    )
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (s) => onlyPetrelErrors(() => decodeInviteToken(`petrel1.${s}`))), { numRuns: RUNS })
  })
})

describe('envelope', () => {
  it('opens what it sealed, and rejects any flipped or truncated byte', async () => {
    const sender = generateSigningKeyPair()
    const key = randomKey()
    const room = 'roomroomroomroomroom'
    const update = new Uint8Array([1, 2, 3, 4, 5])
    const env = await sealEnvelope({ room, epoch: 3, key, senderDevicePub: sender.publicKey, senderDeviceSecret: sender.secretKey, update })
    const open = async (b: Uint8Array): Promise<Uint8Array> => {
      const h = readEnvelope(b)
      if (!(await verifyEnvelope(room, h))) throw new PetrelError('envelope_rejected', 'signature')
      return decryptEnvelope(room, h, key)
    }
    expect([...(await open(env))]).toEqual([...update])
    for (let i = 0; i < env.length; i++) {
      const flipped = env.slice()
      flipped[i]! ^= 0x01
      await expect(open(flipped)).rejects.toBeInstanceOf(PetrelError)
      await expect(open(env.subarray(0, i))).rejects.toBeInstanceOf(PetrelError)
    }
    // Bound to its room: the same bytes do not open in another conversation.
    const h = readEnvelope(env)
    expect(await verifyEnvelope('anotherroomanotherroom', h)).toBe(false)
  })
})

describe('linked devices, adding people and snapshots', () => {
  it('record bodies, link messages, bundles and verification state throw nothing but PetrelError on random bytes', async () => {
    fc.assert(
      fc.property(bytes(600), (b) => {
        onlyPetrelErrors(() => readAddBody(b))
        onlyPetrelErrors(() => readUnlinkBody(b))
        onlyPetrelErrors(() => readSnapshotBody(b))
        onlyPetrelErrors(() => readOffer(b))
        onlyPetrelErrors(() => readAnswer(b))
        onlyPetrelErrors(() => decodeVerification(b, new Set(), new Set()))
        onlyPetrelErrors(() => decodeSentEnvelope(b))
        onlyPetrelErrors(() => decodeMessageSeqs(b, new Map()))
      }),
      { numRuns: RUNS },
    )
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (t) => onlyPetrelErrors(() => decodeLinkPayload(`petrel-link:${t}`))), { numRuns: RUNS })
    for (let i = 0; i < 50; i++) {
      const t = `petrel-id:${Buffer.from(fc.sample(bytes(400), 1)[0]!).toString('base64url')}`
      await readPublicIdentity(t).catch((err) => {
        if (!(err instanceof PetrelError)) throw err
      })
    }
  })

  it('a key bundle opens only for its device and room, and any flipped byte is refused', () => {
    const device = generateAgreementKeyPair()
    const devicePub = new Uint8Array(32).fill(7)
    const keys = new Map([
      [0, randomKey()],
      [3, randomKey()],
    ])
    const bundle = sealKeyBundle(keys, 'roomroomroomroomroom', devicePub, device.publicKey)
    expect(openKeyBundle(bundle, 'roomroomroomroomroom', devicePub, device.secretKey)).toEqual(keys)
    expect(() => openKeyBundle(bundle, 'anotherroomanotherroom', devicePub, device.secretKey)).toThrow(PetrelError)
    expect(() => openKeyBundle(bundle, 'roomroomroomroomroom', new Uint8Array(32).fill(8), device.secretKey)).toThrow(PetrelError)
    for (let i = 0; i < bundle.length; i++) {
      const flipped = bundle.slice()
      flipped[i]! ^= 1
      expect(() => openKeyBundle(flipped, 'roomroomroomroomroom', devicePub, device.secretKey)).toThrow(PetrelError)
    }
  })

  it('a link message opens only with its secret and slot', () => {
    const link = newLinkSecret()
    expect(decodeLinkPayload(encodeLinkPayload(link)).mailbox).toBe(link.mailbox)
    const sealed = sealLinkMessage(link, 0, new Uint8Array([1, 2, 3]))
    expect([...openLinkMessage(link, 0, sealed)!]).toEqual([1, 2, 3])
    expect(openLinkMessage(link, 1, sealed)).toBeUndefined()
    expect(openLinkMessage(newLinkSecret(), 0, sealed)).toBeUndefined()
    for (let i = 0; i < sealed.length; i++) {
      const flipped = sealed.slice()
      flipped[i]! ^= 1
      expect(openLinkMessage(link, 0, flipped)).toBeUndefined()
    }
  })

  it('a snapshot part round-trips and refuses tampering', async () => {
    const sender = generateSigningKeyPair()
    const key = randomKey()
    const room = 'roomroomroomroomroom'
    const snapshot = { snapshotId: new Uint8Array(16).fill(1), coversSeq: 42, part: 1, parts: 3 }
    const env = await sealEnvelope({ room, epoch: 0, key, senderDevicePub: sender.publicKey, senderDeviceSecret: sender.secretKey, update: new Uint8Array([9, 9]), snapshot })
    const opened = openEnvelope(room, readEnvelope(env), key)
    expect(opened).toMatchObject({ kind: 'snapshot', coversSeq: 42, part: 1, parts: 3 })
    expect(() => decryptEnvelope(room, readEnvelope(env), key)).toThrow(PetrelError)
  })
})
