/**
 * Member actions write signed records; what they mean is decided by the fold (membership.ts),
 * which every device and the relay run alike. These specs run each action against a real
 * identity, real signatures and a real membership book, fold what it wrote, and say what the
 * conversation then is. Actions the fold would reject are refused early with a typed error,
 * and write nothing.
 */
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import type { ClientContext } from '../../src/client/client-context.js'
import { loadOrCreateIdentity } from '../../src/client/identity.js'
import { decodeInviteToken } from '../../src/client/invite-token.js'
import { MemberActions, type MemberActionsHost } from '../../src/client/member-actions.js'
import { MembershipBook } from '../../src/client/membership-book.js'
import { encodePublicIdentity } from '../../src/client/public-identity.js'
import { openKeyBundle } from '../../src/shared/key-bundle.js'
import { openSqliteStore } from '../../src/client/storage/sqlite-store.js'
import { generateAgreementKeyPair, generateSigningKeyPair, randomBytes, randomKey, SignatureDomain, signWithDomain } from '../../src/shared/crypto/index.js'
import { ErrorCode, PetrelError } from '../../src/shared/errors.js'
import {
  certificatePayload,
  type DeviceCertificate,
  domainOf,
  encodeCertificate,
  encodeGenesisBody,
  encodeRecord,
  readCertificate,
  readEpochBody,
  readRecord,
  RecordKind,
  recordSigningPayload,
  roomIdFor,
} from '../../src/shared/records.js'

async function newIdentity() {
  const store = await openSqliteStore(':memory:')
  const identity = await loadOrCreateIdentity(store)
  await store.close()
  return identity
}

type Identity = Awaited<ReturnType<typeof newIdentity>>

/** A second device of `who`, certified by their identity key (as linking a device does). */
async function anotherDevice(who: Identity): Promise<DeviceCertificate> {
  const device = generateSigningKeyPair()
  const agreement = generateAgreementKeyPair()
  const payload = certificatePayload(who.userPub, device.publicKey, agreement.publicKey, Date.now())
  return readCertificate(encodeCertificate(payload, await signWithDomain(SignatureDomain.DeviceCertificate, who.userSecret!, payload)))
}

/**
 * A conversation created by `creator`, as `actor`'s device sees it (the creator's own by
 * default): the records map the actions write into, folded after each write, and the keys and
 * writes the host saw.
 */
async function conversation(options: { creator?: Identity; actor?: Identity } = {}) {
  const creator = options.creator ?? (await newIdentity())
  const actor = options.actor ?? creator
  const signAs = (who: Identity) => async (kind: RecordKind, body: Uint8Array) =>
    encodeRecord(kind, body, who.certificate.bytes, await signWithDomain(domainOf(kind), who.deviceSecret, recordSigningPayload(kind, body)))
  const nonce = randomBytes(16)
  const room = roomIdFor(nonce, creator.userPub)
  const doc = new Y.Doc()
  const records = doc.getMap<Uint8Array>('records')
  const book = new MembershipBook(room, actor)
  let seq = 0
  const append = async (bytes: Uint8Array[]) => {
    for (const r of bytes) {
      seq++
      records.set(`1.${seq}`, r)
      book.noteSeq(`1.${seq}`, seq)
    }
    const refused = await book.fold(records)
    if (refused > 0) throw new Error(`${refused} of the records written did not fold`)
  }
  await append([await signAs(creator)(RecordKind.Genesis, encodeGenesisBody({ room, nonce, createdAt: Date.now() }))])
  const keys = new Map<number, Uint8Array>([[0, randomKey()]])
  const written: number[][] = []
  let lastRecords: Uint8Array[] = []
  const kept: number[] = []
  const profiles = doc.getMap<{ name?: string }>('profiles')
  const host: MemberActionsHost = {
    id: room,
    ctx: { identity: actor, signRecord: signAs(actor) } as unknown as ClientContext,
    book,
    get membership() {
      return book.state
    },
    name: (userId) => profiles.get(userId)?.name,
    keys: () => new Map(keys),
    keepKey: async (epoch, key) => {
      kept.push(epoch)
      keys.set(epoch, key)
    },
    writeRecords: async (bytes) => {
      written.push(bytes.map((b) => readRecord(b).kind))
      lastRecords = bytes
      await append(bytes)
    },
    // As KeyRotation.rotate: the new key kept, then its epoch record written.
    rotateOnce: async () => {
      const next = book.newEpoch()
      kept.push(next.epoch)
      keys.set(next.epoch, next.key)
      await append([await signAs(actor)(RecordKind.Epoch, next.body)])
    },
    rotationDone: async () => {},
    ready: async () => {},
    assertOpen: () => {},
  }
  return {
    actions: new MemberActions(host),
    book,
    room,
    creator,
    written,
    kept,
    profiles,
    get lastRecords() {
      return lastRecords
    },
  }
}

/** The same error as `expected`'s code, and nothing written. */
async function refusedWith(action: Promise<unknown>, code: ErrorCode, written: number[][]): Promise<void> {
  const before = written.length
  const err = await action.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(PetrelError)
  expect((err as PetrelError).code).toBe(code)
  expect(written.length).toBe(before)
}

describe('member actions', () => {
  it('invites: one signed Invite record, and a token for this conversation carrying the keys held', async () => {
    const { actions, room, written } = await conversation()
    const token = await actions.invite({ uses: 1 })
    expect(written).toEqual([[RecordKind.Invite]])
    const invite = decodeInviteToken(token)
    expect(invite.room).toBe(room)
    expect([...invite.keys.keys()]).toEqual([0])
    expect(readRecord(invite.inviteRecord).kind).toBe(RecordKind.Invite)
    // Pasted whole, as links carry it: the bare token, a fragment, a fragment of parameters.
    for (const pasted of [` ${token}\n`, `https://chat.example/#${token}`, `https://chat.example/#invite=${token}`, `https://chat.example/?x=1#lang=en&invite=${token}`]) {
      expect(decodeInviteToken(pasted).room, pasted).toBe(room)
    }
    expect(() => decodeInviteToken('https://chat.example/#lang=en')).toThrow(expect.objectContaining({ code: ErrorCode.InviteInvalid }))
  })

  it("invites 'from-join': a new epoch in the same write, and the token carries only its key", async () => {
    const { actions, book, written } = await conversation()
    const token = await actions.invite({ history: 'from-join' })
    expect(written).toEqual([[RecordKind.Epoch, RecordKind.Invite]])
    expect(book.state.epoch).toBe(1)
    expect([...decodeInviteToken(token).keys.keys()]).toEqual([1])
  })

  it('refuses someone who is not an admin (here not a member at all), writing nothing', async () => {
    const bob = await newIdentity()
    const { actions, written } = await conversation({ actor: bob })
    await refusedWith(actions.invite(), ErrorCode.Refused, written)
    await refusedWith(actions.makeAdmin(bob.userId), ErrorCode.Refused, written)
  })

  it('adds a person by their public identity: an Add record, and they are a member with their device', async () => {
    const bob = await newIdentity()
    const { actions, book, written, profiles } = await conversation()
    await actions.addMember(encodePublicIdentity([bob.certificate]))
    expect(written).toEqual([[RecordKind.Add]])
    expect(book.state.members.get(bob.userId)?.devices.has(bob.deviceId)).toBe(true)
    profiles.set(bob.userId, { name: 'Bob' })
    expect(actions.members().find((m) => m.userId === bob.userId)).toEqual({ userId: bob.userId, name: 'Bob', role: 'member', devices: [bob.deviceId] })
    // Again, with nothing new: refused.
    await refusedWith(actions.addMember(encodePublicIdentity([bob.certificate])), ErrorCode.InvalidArgument, written)
  })

  it("adds a member's new device to what it holds; refuses 'from-join' for someone who is a member already", async () => {
    const bob = await newIdentity()
    const { actions, book, written } = await conversation()
    await actions.addMember(encodePublicIdentity([bob.certificate]))
    const laptop = await anotherDevice(bob)
    await refusedWith(actions.addMember(encodePublicIdentity([bob.certificate, laptop]), { history: 'from-join' }), ErrorCode.InvalidArgument, written)
    await actions.addMember(encodePublicIdentity([bob.certificate, laptop]))
    expect(written.at(-1)).toEqual([RecordKind.Add])
    expect(book.state.members.get(bob.userId)?.devices.size).toBe(2)
  })

  it('welcomes a joined device with the keys its invite lacked: after the invite’s epoch for a full one, the current alone for from-join', async () => {
    const bob = await newIdentity()
    const { actions, book, room, written } = await conversation()
    await actions.addMember(encodePublicIdentity([bob.certificate]))
    // Two new epochs (each removal starts one, its key kept): the conversation is at epoch 2.
    for (const gone of [await newIdentity(), await newIdentity()]) {
      await actions.addMember(encodePublicIdentity([gone.certificate]))
      await actions.removeMember(gone.userId)
    }
    expect(book.state.epoch).toBe(2)
    const given = async (invite: { history: 'full' | 'from-join'; epoch: number }) => {
      await actions.welcome(bob.deviceId, bob.userId, invite)
      expect(written.at(-1)).toEqual([RecordKind.Add])
      const bundles = book.state.bundles.get(bob.deviceId)!
      return [...openKeyBundle(bundles.at(-1)!, room, bob.devicePub, bob.agreementSecret).keys()]
    }
    expect(await given({ history: 'full', epoch: 1 })).toEqual([2])
    expect(await given({ history: 'full', epoch: 0 })).toEqual([1, 2])
    expect(await given({ history: 'from-join', epoch: 0 })).toEqual([2])
  })

  it('removes a member: Remove and a new epoch in one write, its key kept first and not wrapped for them', async () => {
    const bob = await newIdentity()
    const conv = await conversation()
    const { actions, book, written, kept, creator } = conv
    await actions.addMember(encodePublicIdentity([bob.certificate]))
    await actions.removeMember(bob.userId)
    expect(written.at(-1)).toEqual([RecordKind.Remove, RecordKind.Epoch])
    expect(kept).toEqual([1])
    expect(book.state.members.has(bob.userId)).toBe(false)
    expect(book.state.epoch).toBe(1)
    const epoch = readEpochBody(readRecord(conv.lastRecords.at(-1)!).body)
    expect([...epoch.wrapped.keys()]).toEqual([creator.deviceId])
  })

  it('refuses to remove someone who is not a member, or oneself (that is leave)', async () => {
    const stranger = await newIdentity()
    const { actions, creator, written } = await conversation()
    await refusedWith(actions.removeMember(stranger.userId), ErrorCode.NotFound, written)
    await refusedWith(actions.removeMember(creator.userId), ErrorCode.InvalidArgument, written)
  })

  it('makes a member an admin: a Promote record, and their role is admin', async () => {
    const bob = await newIdentity()
    const { actions, book, written } = await conversation()
    await actions.addMember(encodePublicIdentity([bob.certificate]))
    await actions.makeAdmin(bob.userId)
    expect(written.at(-1)).toEqual([RecordKind.Promote])
    expect(book.isAdmin(bob.userId)).toBe(true)
  })

  it('leaves: a Leave record, and this person is no longer a member', async () => {
    const { actions, book, creator, written } = await conversation()
    await actions.leave()
    expect(written).toEqual([[RecordKind.Leave]])
    expect(book.state.members.has(creator.userId)).toBe(false)
  })

  it("revokes an invite with a Revoke record; another conversation's invite is refused", async () => {
    const { actions, written } = await conversation()
    const token = await actions.invite()
    await actions.revokeInvite(token)
    expect(written.at(-1)).toEqual([RecordKind.Revoke])
    const other = await conversation()
    await refusedWith(other.actions.revokeInvite(token), ErrorCode.InviteInvalid, other.written)
  })
})
