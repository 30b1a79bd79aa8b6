import { describe, expect, it } from 'vitest'
import { type AdmissionRules, admitEnvelope, checkEnvelopes, type IncomingEnvelope, nonceKey } from '../../src/client/envelope-admission.js'
import { randomBytes, toBase64Url } from '../../src/shared/crypto/index.js'
import { generateSigningKeyPair } from '../../src/shared/crypto/ed25519.js'
import { keyCheckOf, readEnvelope, sealEnvelope } from '../../src/shared/envelope.js'
import { ErrorCode } from '../../src/shared/errors.js'

const ROOM = 'room-1'
const alice = generateSigningKeyPair()
const stranger = generateSigningKeyPair()
const key0 = randomBytes(32)
const key1 = randomBytes(32)
const update = new Uint8Array([1, 2, 3])

function rules(over: Partial<AdmissionRules> = {}): AdmissionRules {
  const nonces = new Map<string, Uint8Array>()
  return {
    room: ROOM,
    everDevices: new Map([[toBase64Url(alice.publicKey), 'alice']]),
    keys: new Map([
      [0, key0],
      [1, key1],
    ]),
    awaitingWelcome: false,
    winnerKeyCheck: () => undefined,
    sealedInTime: () => true,
    nonces: () => nonces,
    ...over,
  }
}

async function sealed(opts: { epoch?: number; key?: Uint8Array; by?: typeof alice; room?: string; part?: boolean } = {}): Promise<IncomingEnvelope> {
  const by = opts.by ?? alice
  const bytes = await sealEnvelope({
    room: opts.room ?? ROOM,
    epoch: opts.epoch ?? 0,
    key: opts.key ?? key0,
    senderDevicePub: by.publicKey,
    senderDeviceSecret: by.secretKey,
    update,
    snapshot: opts.part ? { snapshotId: randomBytes(16), coversSeq: 5, part: 0, parts: 1 } : undefined,
  })
  return { key: `1.${Math.floor(Math.random() * 1e6).toString(36)}`, seq: 7, bytes }
}

/** The envelope through both steps, as the receive path runs them. */
async function admit(r: AdmissionRules, envelope: IncomingEnvelope, room = ROOM) {
  const malformed: unknown[] = []
  const { headers, verdicts } = await checkEnvelopes(room, [envelope], (err) => malformed.push(err))
  return { admission: admitEnvelope(r, envelope, headers[0], verdicts[0]), malformed }
}

describe('envelope admission', () => {
  it('opens an envelope from a member, under the epoch key, with a fresh nonce', async () => {
    const { admission } = await admit(rules(), await sealed())
    expect(admission.kind).toBe('open')
    if (admission.kind !== 'open') return
    expect(admission.opened).toEqual({ kind: 'update', update })
    expect(admission).toMatchObject({ userId: 'alice', deviceId: toBase64Url(alice.publicKey), epoch: 0 })
  })

  it('reports a header that does not parse and leaves it out', async () => {
    const envelope = { key: '1.0', seq: 1, bytes: new Uint8Array([99, 1, 2]) }
    const { admission, malformed } = await admit(rules(), envelope)
    expect(admission).toEqual({ kind: 'malformed' })
    expect(malformed).toHaveLength(1)
  })

  it('holds an envelope from a device that is not a member yet (its join record may come later)', async () => {
    const { admission } = await admit(rules(), await sealed({ by: stranger }))
    expect(admission).toMatchObject({ kind: 'hold', code: ErrorCode.UnknownSender })
  })

  it('refuses an envelope whose signature does not verify', async () => {
    const envelope = await sealed()
    envelope.bytes[envelope.bytes.length - 1]! ^= 1
    expect((await admit(rules(), envelope)).admission).toMatchObject({ kind: 'refuse', code: ErrorCode.EnvelopeRejected, message: 'envelope signature does not verify' })
  })

  it('refuses an envelope signed for another conversation', async () => {
    const envelope = await sealed({ room: 'room-2' })
    expect((await admit(rules(), envelope)).admission).toMatchObject({ kind: 'refuse', message: 'envelope signature does not verify' })
  })

  it('holds an envelope of an epoch whose key this device does not hold yet', async () => {
    const { admission } = await admit(rules(), await sealed({ epoch: 2, key: randomBytes(32) }))
    expect(admission).toMatchObject({ kind: 'hold', message: 'no key for epoch 2' })
    expect(admission).not.toHaveProperty('quiet')
  })

  it('holds quietly (no error worth reporting) what precedes its first key, or what a welcome is to bring', async () => {
    const late = new Map([[3, randomBytes(32)]])
    expect((await admit(rules({ keys: late }), await sealed({ epoch: 0, key: key0 }))).admission).toMatchObject({ kind: 'hold', quiet: true })
    expect((await admit(rules({ keys: new Map() }), await sealed({ epoch: 0, key: key0 }))).admission).toMatchObject({ kind: 'hold', quiet: true })
    expect((await admit(rules({ awaitingWelcome: true }), await sealed({ epoch: 2, key: randomBytes(32) }))).admission).toMatchObject({ kind: 'hold', quiet: true })
  })

  it('holds an envelope under another key for an epoch whose winner is not known here yet', async () => {
    const { admission } = await admit(rules(), await sealed({ epoch: 1, key: randomBytes(32) }))
    expect(admission).toMatchObject({ kind: 'hold', message: 'envelope sealed under another key for epoch 1' })
  })

  it('refuses an envelope under another key once this device holds the winning key', async () => {
    const r = rules({ winnerKeyCheck: (epoch) => (epoch === 1 ? keyCheckOf(key1) : undefined) })
    const { admission } = await admit(r, await sealed({ epoch: 1, key: randomBytes(32) }))
    expect(admission).toMatchObject({ kind: 'refuse', code: ErrorCode.EnvelopeRejected })
    expect(admission.kind === 'refuse' && admission.message).toMatch(/does not decrypt/)
  })

  it('refuses an envelope under another key for epoch 0, which has one key for everyone', async () => {
    const { admission } = await admit(rules(), await sealed({ epoch: 0, key: randomBytes(32) }))
    expect(admission.kind === 'refuse' && admission.message).toMatch(/does not decrypt/)
  })

  it('refuses an envelope sealed under an epoch after the next one began', async () => {
    const r = rules({ sealedInTime: (epoch, seq) => !(epoch === 0 && seq > 5) })
    const { admission } = await admit(r, await sealed())
    expect(admission).toMatchObject({ kind: 'refuse', message: expect.stringMatching(/after epoch 1 began/) })
  })

  it('skips a copy of an envelope already opened, and refuses another that reuses its nonce', async () => {
    const envelope = await sealed()
    const h = readEnvelope(envelope.bytes)
    const r = rules()
    ;(r.nonces() as Map<string, Uint8Array>).set(nonceKey(h.nonce), h.signature)
    expect((await admit(r, envelope)).admission).toEqual({ kind: 'copy' })
    ;(r.nonces() as Map<string, Uint8Array>).set(nonceKey(h.nonce), randomBytes(64))
    expect((await admit(r, envelope)).admission).toMatchObject({ kind: 'refuse', message: expect.stringMatching(/reuses a nonce/) })
  })

  it('refuses a row uploaded as a snapshot part that holds a message, and opens one that holds a part', async () => {
    const message = { ...(await sealed()), part: true }
    expect((await admit(rules(), message)).admission).toMatchObject({ kind: 'refuse', message: expect.stringMatching(/uploaded as a snapshot part holds something else/) })
    const part = { ...(await sealed({ part: true })), part: true }
    const { admission } = await admit(rules(), part)
    expect(admission.kind === 'open' && admission.opened.kind).toBe('snapshot')
  })

  it('asks for the nonces only once an envelope passed every check before them', async () => {
    let asked = 0
    const r = rules({
      nonces: () => {
        asked++
        return new Map()
      },
    })
    await admit(r, await sealed({ by: stranger }))
    await admit(r, await sealed({ epoch: 2, key: randomBytes(32) }))
    expect(asked).toBe(0)
    await admit(r, await sealed())
    expect(asked).toBe(1)
  })
})
