/**
 * A record whose signature verifies but whose body does not parse is refused like any other
 * (`applyRecord` → { ok: false }). Thrown, it stopped the relay part-way through an upload
 * (records before it applied in memory, none stored) and a device's fold for good.
 */
import * as encoding from 'lib0/encoding'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { MembershipBook } from '../../src/client/membership-book.js'
import { Room } from '../../src/relay/room.js'
import { generateSigningKeyPair, randomBytes, SignatureDomain, signWithDomain } from '../../src/shared/crypto/index.js'
import { encodeGenesisBody, encodeInviteBody, encodeJoinBody, encodeRecord, RecordKind, recordSigningPayload, roomIdFor } from '../../src/shared/records.js'
import { person } from '../fixtures/record-signer.js'

async function conversation() {
  const alice = await person()
  const bob = await person()
  const nonce = randomBytes(16)
  const room = roomIdFor(nonce, alice.identity.userPub)
  const genesis = await alice.sign(RecordKind.Genesis, encodeGenesisBody({ room, nonce, createdAt: Date.now() }))
  const inv = generateSigningKeyPair()
  const invite = await alice.sign(RecordKind.Invite, encodeInviteBody({ room, invitePub: inv.publicKey, expiresAt: 0, maxUses: 0, history: 'full', createdAt: Date.now() }))
  const joinBody = encodeJoinBody({ room, invitePub: inv.publicKey, joiner: bob.identity.certificate.bytes, joinedAt: Date.now() })
  const join = encodeRecord(RecordKind.Join, joinBody, new Uint8Array(0), await signWithDomain(SignatureDomain.Join, inv.secretKey, recordSigningPayload(RecordKind.Join, joinBody)))
  // Bob's leave with a 31-byte user key: signed properly, body malformed.
  const e = encoding.createEncoder()
  encoding.writeVarString(e, room)
  encoding.writeVarUint8Array(e, new Uint8Array(31))
  encoding.writeVarUint(e, Date.now())
  const broken = await bob.sign(RecordKind.Leave, encoding.toUint8Array(e))
  return { alice, bob, room, genesis, invite, join, broken }
}

describe('a signed record with a malformed body', () => {
  it('is refused by the relay, which goes on with the update', async () => {
    const c = await conversation()
    const room = new Room(c.room, new Map(), 0)
    await room.loadRecords([c.genesis, c.invite, c.join])
    expect(room.membership.members.size).toBe(2)
    // One update from Bob: [valid epoch record, malformed leave] — ingestInTurn applies them in order.
    const book = new MembershipBook(c.room, c.bob.identity)
    const recs = new Y.Doc().getMap<Uint8Array>('rec')
    recs.set('1.0', c.genesis)
    recs.set('1.1', c.invite)
    recs.set('1.2', c.join)
    await book.fold(recs)
    const epoch = await c.bob.sign(RecordKind.Epoch, book.newEpoch().body)
    expect(await room.applyUploadedRecord(epoch, Date.now())).toBeInstanceOf(Uint8Array)
    let threw: unknown
    let verdict: unknown
    try {
      verdict = await room.applyUploadedRecord(c.broken, Date.now())
    } catch (err) {
      threw = err
    }
    expect(threw).toBeUndefined()
    expect(verdict).toBe(false)
  })

  it('is ignored by a client fold, which goes on with the records after it', async () => {
    const c = await conversation()
    const book = new MembershipBook(c.room, c.alice.identity)
    const recs = new Y.Doc().getMap<Uint8Array>('rec')
    recs.set('1.0', c.genesis)
    recs.set('1.1', c.invite)
    recs.set('1.2', c.join)
    recs.set('1.3', c.broken)
    book.noteSeq('1.0', 1)
    book.noteSeq('1.1', 2)
    book.noteSeq('1.2', 3)
    book.noteSeq('1.3', 4)
    let threw: unknown
    try {
      await book.fold(recs)
    } catch (err) {
      threw = err
    }
    expect(threw).toBeUndefined()
    expect(book.state.members.size).toBe(2)
  })
})
