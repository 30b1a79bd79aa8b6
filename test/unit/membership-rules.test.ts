/**
 * The membership fold's admission rules (shared/membership.ts), which the relay and every
 * client apply alike: here, that a device whose X25519 agreement key is of small order is
 * never admitted, by genesis, join or add. Nothing can be wrapped to such a key, and an
 * epoch record must wrap the key for every member device, so one such device would make every
 * later rotation fail until it was removed.
 */
import { describe, expect, it } from 'vitest'
import {
  generateAgreementKeyPair,
  generateSigningKeyPair,
  randomBytes,
  SignatureDomain,
  toBase64Url,
  signWithDomain,
} from '../../src/shared/crypto/index.js'
import { Room } from '../../src/relay/room.js'
import {
  applyRecord,
  emptyMembership,
  MAX_CONVERSATION_DEVICES,
  MAX_MEMBER_DEVICES,
  TOO_MANY_DEVICES,
  UNUSABLE_AGREEMENT_KEY,
} from '../../src/shared/membership.js'
import {
  certificatePayload,
  encodeAddBody,
  domainOf,
  encodeCertificate,
  encodeGenesisBody,
  encodeInviteBody,
  encodeJoinBody,
  encodeMemberChangeBody,
  encodeRecord,
  readCertificate,
  readRecord,
  AdmissionKind,
  RecordKind,
  recordSigningPayload,
  roomIdFor,
} from '../../src/shared/records.js'
import { Reason } from '../../src/shared/wire.js'

/** 0, with the top bit set: RFC 7748 ignores that bit, so this is the small-order point u = 0. */
const SMALL_ORDER = (() => {
  const k = new Uint8Array(32)
  k[31] = 0x80
  return k
})()

async function device(agreementPub = generateAgreementKeyPair().publicKey) {
  const user = generateSigningKeyPair()
  const dev = generateSigningKeyPair()
  const payload = certificatePayload(user.publicKey, dev.publicKey, agreementPub, Date.now())
  const cert = encodeCertificate(payload, await signWithDomain(SignatureDomain.DeviceCertificate, user.secretKey, payload))
  const sign = async (kind: RecordKind, body: Uint8Array) =>
    readRecord(encodeRecord(kind, body, cert, await signWithDomain(domainOf(kind), dev.secretKey, recordSigningPayload(kind, body))))
  return { user, cert, sign }
}

/** A certificate for one more device of `user`'s. */
async function sibling(user: { publicKey: Uint8Array; secretKey: Uint8Array }) {
  const dev = generateSigningKeyPair()
  const payload = certificatePayload(user.publicKey, dev.publicKey, generateAgreementKeyPair().publicKey, Date.now())
  return encodeCertificate(payload, await signWithDomain(SignatureDomain.DeviceCertificate, user.secretKey, payload))
}

async function roomWithInvite() {
  const creator = await device()
  const nonce = randomBytes(16)
  const room = roomIdFor(nonce, creator.user.publicKey)
  const s = emptyMembership(room)
  expect(await applyRecord(s, await creator.sign(RecordKind.Genesis, encodeGenesisBody({ room, nonce, createdAt: Date.now() })))).toEqual({ ok: true })
  const invite = generateSigningKeyPair()
  const inviteBody = encodeInviteBody({ room, invitePub: invite.publicKey, expiresAt: 0, maxUses: 0, history: 'full', createdAt: Date.now() })
  const inviteRecord = await creator.sign(RecordKind.Invite, inviteBody)
  expect(await applyRecord(s, inviteRecord)).toEqual({ ok: true })
  const join = async (joinerCert: Uint8Array) => {
    const body = encodeJoinBody({ room, invitePub: invite.publicKey, joiner: joinerCert, joinedAt: Date.now() })
    const sig = await signWithDomain(SignatureDomain.Join, invite.secretKey, recordSigningPayload(RecordKind.Join, body))
    return readRecord(encodeRecord(RecordKind.Join, body, new Uint8Array(0), sig))
  }
  /** Another invite of the creator's, made at `createdAt` by its clock. */
  const inviteAt = async (createdAt: number) => {
    const other = generateSigningKeyPair()
    const body = encodeInviteBody({ room, invitePub: other.publicKey, expiresAt: 0, maxUses: 0, history: 'full', createdAt })
    expect(await applyRecord(s, await creator.sign(RecordKind.Invite, body))).toEqual({ ok: true })
    return async (joinerCert: Uint8Array) => {
      const jb = encodeJoinBody({ room, invitePub: other.publicKey, joiner: joinerCert, joinedAt: Date.now() })
      return readRecord(encodeRecord(RecordKind.Join, jb, new Uint8Array(0), await signWithDomain(SignatureDomain.Join, other.secretKey, recordSigningPayload(RecordKind.Join, jb))))
    }
  }
  return { s, room, join, creator, inviteAt, inviteRecord }
}

describe('membership admission', () => {
  it('refuses a join whose device agreement key is of small order, and admits nothing of it', async () => {
    const { s, join } = await roomWithInvite()
    const bad = await device(SMALL_ORDER)
    expect(await applyRecord(s, await join(bad.cert))).toEqual({ ok: false, reason: UNUSABLE_AGREEMENT_KEY })
    expect(s.members.size).toBe(1)
    expect(s.devices.size).toBe(1)
    // The same invite still admits a device with a usable key.
    const good = await device()
    expect(await applyRecord(s, await join(good.cert))).toEqual({ ok: true })
    expect(s.members.size).toBe(2)
  })

  it("refuses an admin's add of a device whose agreement key is of small order, and admits nothing of it", async () => {
    const { s, room, creator } = await roomWithInvite()
    const add = (d: { user: { publicKey: Uint8Array }; cert: Uint8Array }) =>
      creator.sign(
        RecordKind.Add,
        encodeAddBody({ room, userPub: d.user.publicKey, epoch: 0, keyCheck: new Uint8Array(8), at: Date.now(), devices: [{ certificate: d.cert, keyBundle: new Uint8Array(1) }] }),
      )
    expect(await applyRecord(s, await add(await device(SMALL_ORDER)))).toEqual({ ok: false, reason: UNUSABLE_AGREEMENT_KEY })
    expect(s.members.size).toBe(1)
    expect(s.devices.size).toBe(1)
    expect(await applyRecord(s, await add(await device()))).toEqual({ ok: true })
    expect(s.members.size).toBe(2)
  })

  it('refuses a room whose creator device has a small-order agreement key', async () => {
    const creator = await device(SMALL_ORDER)
    const nonce = randomBytes(16)
    const room = roomIdFor(nonce, creator.user.publicKey)
    const s = emptyMembership(room)
    expect(await applyRecord(s, await creator.sign(RecordKind.Genesis, encodeGenesisBody({ room, nonce, createdAt: Date.now() })))).toEqual({
      ok: false,
      reason: UNUSABLE_AGREEMENT_KEY,
    })
    expect(s.creator).toBeUndefined()
  })

  it('keeps a removed member out with an invite applied before the removal, even when the remover’s clock dated the removal before it', async () => {
    const { s, room, join, creator, inviteAt } = await roomWithInvite()
    const bob = await device()
    expect(await applyRecord(s, await join(bob.cert))).toEqual({ ok: true })
    // The remover's clock runs a minute behind the inviter's.
    const remove = await creator.sign(RecordKind.Remove, encodeMemberChangeBody({ room, userPub: bob.user.publicKey, at: Date.now() - 60_000 }))
    expect(await applyRecord(s, remove)).toEqual({ ok: true })
    // Bob's device comes back with the invite he joined by: it was applied before the removal.
    // The relay, admitting, refuses it (so it is never stored).
    const again = await join(bob.cert)
    expect(await applyRecord(s, again, { relay: true, live: true })).toEqual({ ok: false, reason: 'removed member; invite predates the removal' })
    expect(s.members.size).toBe(1)
    // An invite applied after the removal, dated after it too, brings him back.
    const fresh = await inviteAt(Date.now())
    expect(await applyRecord(s, await fresh(bob.cert), { relay: true, live: true })).toEqual({ ok: true })
    expect(s.members.size).toBe(2)
    // A history stored before the rule (such a join taken then) folds as it did.
    const { s: stored, room: room2, join: join2, creator: creator2 } = await roomWithInvite()
    expect(await applyRecord(stored, await join2(bob.cert))).toEqual({ ok: true })
    expect(await applyRecord(stored, await creator2.sign(RecordKind.Remove, encodeMemberChangeBody({ room: room2, userPub: bob.user.publicKey, at: Date.now() - 60_000 })))).toEqual({ ok: true })
    expect(await applyRecord(stored, await join2(bob.cert))).toEqual({ ok: true })
  })

  it('keeps a removed member out with an invite dated before the removal, though applied after it', async () => {
    const { s, room, join, creator, inviteAt } = await roomWithInvite()
    const bob = await device()
    expect(await applyRecord(s, await join(bob.cert))).toEqual({ ok: true })
    expect(await applyRecord(s, await creator.sign(RecordKind.Remove, encodeMemberChangeBody({ room, userPub: bob.user.publicKey, at: Date.now() })))).toEqual({ ok: true })
    // Made offline an hour ago, uploaded now.
    const old = await inviteAt(Date.now() - 3_600_000)
    expect(await applyRecord(s, await old(bob.cert))).toEqual({ ok: false, reason: 'removed member; invite predates the removal' })
  })

  it('refuses, as the relay takes an upload, an add that would bring back under the same key someone removed while it was current; stored ones fold as before', async () => {
    const { s, room, join, creator } = await roomWithInvite()
    const bob = await device()
    expect(await applyRecord(s, await join(bob.cert))).toEqual({ ok: true })
    expect(await applyRecord(s, await creator.sign(RecordKind.Remove, encodeMemberChangeBody({ room, userPub: bob.user.publicKey, at: Date.now() })))).toEqual({ ok: true })
    const add = (epoch: number) =>
      creator.sign(RecordKind.Add, encodeAddBody({ room, userPub: bob.user.publicKey, epoch, keyCheck: new Uint8Array(8), at: Date.now(), devices: [{ certificate: bob.cert, keyBundle: new Uint8Array(1) }] }))
    // An add written before its signer folded the removal (an automatic welcome, say), as the
    // relay takes an upload: refused, so never stored.
    const early = await add(0)
    expect(await applyRecord(s, early, { relay: true, live: true })).toEqual({ ok: false, reason: 'removed in this epoch; add them again once the key changed' })
    expect(s.members.has(toBase64Url(bob.user.publicKey))).toBe(false)
    // Stored before the rule (the relay took it then): read back, by the relay or a device, it
    // folds as it always did, so both end where the relay that took it ended.
    const { s: refold, join: joinAgain, room: room2, creator: creator2 } = await roomWithInvite()
    expect(await applyRecord(refold, await joinAgain(bob.cert))).toEqual({ ok: true })
    expect(await applyRecord(refold, await creator2.sign(RecordKind.Remove, encodeMemberChangeBody({ room: room2, userPub: bob.user.publicKey, at: Date.now() })))).toEqual({ ok: true })
    const stored = await creator2.sign(RecordKind.Add, encodeAddBody({ room: room2, userPub: bob.user.publicKey, epoch: 0, keyCheck: new Uint8Array(8), at: Date.now(), devices: [{ certificate: bob.cert, keyBundle: new Uint8Array(1) }] }))
    expect(await applyRecord(refold, stored, { relay: true })).toEqual({ ok: true })
    // Once the key changed, an add brings them back.
    s.epoch = 1
    expect(await applyRecord(s, await add(1), { relay: true, live: true })).toEqual({ ok: true })
    expect(s.members.has(toBase64Url(bob.user.publicKey))).toBe(true)
  })
})

describe('device caps', () => {
  const addOf = (room: string, signer: { sign: (k: RecordKind, b: Uint8Array) => Promise<ReturnType<typeof readRecord>> }, userPub: Uint8Array, certs: Uint8Array[]) =>
    signer.sign(
      RecordKind.Add,
      encodeAddBody({ room, userPub, epoch: 0, keyCheck: new Uint8Array(8), at: Date.now(), devices: certs.map((certificate) => ({ certificate, keyBundle: new Uint8Array(1) })) }),
    )

  it(`refuses, as the relay takes it, a join or add that gives one person more than ${MAX_MEMBER_DEVICES} devices; devices there already do not count`, async () => {
    const { s, room, join } = await roomWithInvite()
    const bob = await device()
    expect(await applyRecord(s, await join(bob.cert), { relay: true, live: true })).toEqual({ ok: true })
    // Bob adds devices of his own, up to the cap: a whole add record's worth at most.
    const more = await Promise.all(Array.from({ length: MAX_MEMBER_DEVICES - 1 }, () => sibling(bob.user)))
    expect(await applyRecord(s, await addOf(room, bob, bob.user.publicKey, more), { relay: true, live: true })).toEqual({ ok: true })
    const bobs = s.members.get(toBase64Url(bob.user.publicKey))!
    expect(bobs.devices.size).toBe(MAX_MEMBER_DEVICES)
    // One more, by an add or a join: refused, and nothing of it applied.
    const extra = await sibling(bob.user)
    const refusedAdd = await applyRecord(s, await addOf(room, bob, bob.user.publicKey, [extra]), { relay: true, live: true })
    expect(refusedAdd).toEqual({ ok: false, reason: expect.stringContaining(TOO_MANY_DEVICES) })
    expect(await applyRecord(s, await join(extra), { relay: true, live: true })).toEqual({ ok: false, reason: expect.stringContaining(TOO_MANY_DEVICES) })
    expect(bobs.devices.size).toBe(MAX_MEMBER_DEVICES)
    expect(s.devices.size).toBe(MAX_MEMBER_DEVICES + 1)
    // Adding devices he has already is no growth.
    expect(await applyRecord(s, await addOf(room, bob, bob.user.publicKey, more.slice(0, 3)), { relay: true, live: true })).toEqual({ ok: true })
    // The relay's rule as it takes uploads: a history stored before it folds as it did.
    expect(await applyRecord(s, await addOf(room, bob, bob.user.publicKey, [extra]), { relay: true })).toEqual({ ok: true })
    expect(bobs.devices.size).toBe(MAX_MEMBER_DEVICES + 1)
  })

  it(`refuses a device past ${MAX_CONVERSATION_DEVICES} in one conversation, and the relay denies such a join with reason 17`, async () => {
    const { s, room, join, creator, inviteRecord } = await roomWithInvite()
    const relayRoom = new Room(room, new Map(), 0)
    let people = 0
    while (s.devices.size + MAX_MEMBER_DEVICES <= MAX_CONVERSATION_DEVICES) {
      const person = generateSigningKeyPair()
      const certs = await Promise.all(Array.from({ length: MAX_MEMBER_DEVICES }, () => sibling(person)))
      expect(await applyRecord(s, await addOf(room, creator, person.publicKey, certs), { relay: true, live: true })).toEqual({ ok: true })
      people++
    }
    const last = generateSigningKeyPair()
    const lastCerts = await Promise.all(Array.from({ length: MAX_CONVERSATION_DEVICES - s.devices.size }, () => sibling(last)))
    expect(await applyRecord(s, await addOf(room, creator, last.publicKey, lastCerts), { relay: true, live: true })).toEqual({ ok: true })
    expect(s.devices.size).toBe(MAX_CONVERSATION_DEVICES)
    expect(people).toBeGreaterThan(100)
    // A new person's join, a device more of a person with room under their own cap: refused.
    const carol = await device()
    expect(await applyRecord(s, await join(carol.cert), { relay: true, live: true })).toEqual({ ok: false, reason: expect.stringContaining(`at most ${MAX_CONVERSATION_DEVICES}`) })
    expect(await applyRecord(s, await addOf(room, creator, last.publicKey, [await sibling(last)]), { relay: true, live: true })).toEqual({
      ok: false,
      reason: expect.stringContaining(TOO_MANY_DEVICES),
    })
    expect(s.devices.size).toBe(MAX_CONVERSATION_DEVICES)
    // At the relay's door: the same join, as an admission, is denied with TooManyDevices.
    Object.assign(relayRoom.membership, s)
    const admitted = await relayRoom.admit(readCertificate(carol.cert).devicePub, { kind: AdmissionKind.Join, invite: inviteRecord.bytes, join: (await join(carol.cert)).bytes }, Date.now())
    expect(admitted).toMatchObject({ ok: false, reason: Reason.TooManyDevices, message: expect.stringContaining(TOO_MANY_DEVICES) })
    expect(relayRoom.membership.devices.size).toBe(MAX_CONVERSATION_DEVICES)
  }, 60_000)
})
