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
import { applyRecord, emptyMembership, UNUSABLE_AGREEMENT_KEY } from '../../src/shared/membership.js'
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
  readRecord,
  RecordKind,
  recordSigningPayload,
  roomIdFor,
} from '../../src/shared/records.js'

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

async function roomWithInvite() {
  const creator = await device()
  const nonce = randomBytes(16)
  const room = roomIdFor(nonce, creator.user.publicKey)
  const s = emptyMembership(room)
  expect(await applyRecord(s, await creator.sign(RecordKind.Genesis, encodeGenesisBody({ room, nonce, createdAt: Date.now() })))).toEqual({ ok: true })
  const invite = generateSigningKeyPair()
  const inviteBody = encodeInviteBody({ room, invitePub: invite.publicKey, expiresAt: 0, maxUses: 0, history: 'full', createdAt: Date.now() })
  expect(await applyRecord(s, await creator.sign(RecordKind.Invite, inviteBody))).toEqual({ ok: true })
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
  return { s, room, join, creator, inviteAt }
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
