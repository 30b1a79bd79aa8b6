/**
 * The relay's ingest of records (Room.applyUploadedRecord: a known record changes nothing,
 * its struct stays in the row) and a device's fold over the rows it receives must agree when
 * a member uploads a record again byte for byte under a new key.
 */
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { MembershipBook } from '../../src/client/membership-book.js'
import { Room } from '../../src/relay/room.js'
import { generateSigningKeyPair, randomBytes, SignatureDomain, signWithDomain } from '../../src/shared/crypto/index.js'
import {
  encodeGenesisBody,
  encodeInviteBody,
  encodeJoinBody,
  encodeMemberChangeBody,
  encodeRecord,
  RecordKind,
  recordSigningPayload,
  roomIdFor,
} from '../../src/shared/records.js'
import { person } from '../fixtures/record-signer.js'

describe('a record uploaded again under a new key', () => {
  it('changes nothing at a device, as it changes nothing at the relay: an old remove does not undo a rejoin', async () => {
    const alice = await person()
    const bob = await person()
    const carol = await person()
    const nonce = randomBytes(16)
    const room = roomIdFor(nonce, alice.identity.userPub)
    const t = Date.now()
    const invite = async (createdAt: number) => {
      const pair = generateSigningKeyPair()
      const rec = await alice.sign(RecordKind.Invite, encodeInviteBody({ room, invitePub: pair.publicKey, expiresAt: 0, maxUses: 0, history: 'full', createdAt }))
      const join = async (who: typeof bob, joinedAt: number) => {
        const body = encodeJoinBody({ room, invitePub: pair.publicKey, joiner: who.identity.certificate.bytes, joinedAt })
        return encodeRecord(RecordKind.Join, body, new Uint8Array(0), await signWithDomain(SignatureDomain.Join, pair.secretKey, recordSigningPayload(RecordKind.Join, body)))
      }
      return { rec, join }
    }
    const inv1 = await invite(t)
    const remove = await alice.sign(RecordKind.Remove, encodeMemberChangeBody({ room, userPub: bob.identity.userPub, at: t + 10 }))
    const inv2 = await invite(t + 20)

    const relay = new Room(room, new Map(), 0)
    const book = new MembershipBook(room, carol.identity)
    const rows = new Y.Doc().getMap<Uint8Array>('rec')
    let seq = 0
    /** What ingestInTurn does with one record struct, and the row a client then receives. */
    const upload = async (bytes: Uint8Array) => {
      const verdict = await relay.applyUploadedRecord(bytes, Date.now())
      if (verdict === false) return 'refused'
      seq++
      rows.set(`1.${seq}`, bytes)
      book.noteSeq(`1.${seq}`, seq)
      return verdict === true ? 'kept (known)' : 'stored'
    }
    await relay.loadRecords([await alice.sign(RecordKind.Genesis, encodeGenesisBody({ room, nonce, createdAt: t }))])
    expect(await upload(inv1.rec)).toBe('stored')
    expect(await upload(await inv1.join(bob, t + 1))).toBe('stored')
    expect(await upload(await inv1.join(carol, t + 2))).toBe('stored')
    expect(await upload(remove)).toBe('stored')
    expect(await upload(inv2.rec)).toBe('stored')
    expect(await upload(await inv2.join(bob, t + 21))).toBe('stored')
    const bobId = bob.identity.userId
    expect(relay.membership.members.has(bobId)).toBe(true)
    // Carol (a plain member) re-uploads Alice's remove, byte for byte.
    expect(await upload(remove)).toBe('kept (known)')
    // Clients fold every row in order (the genesis too: add it as the creator's first row).
    rows.set('0.1', await alice.sign(RecordKind.Genesis, encodeGenesisBody({ room, nonce, createdAt: t })))
    book.noteSeq('0.1', 0)
    await book.fold(rows)
    expect(relay.membership.members.has(bobId)).toBe(true)
    expect(book.state.members.has(bobId)).toBe(true)
  })
})
