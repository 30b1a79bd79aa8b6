/**
 * The membership book folds a conversation's records (genesis, epochs, …) in relay order.
 * Each fold replays every record; signatures that verified before, over the same bytes, are
 * not checked again — any other bytes under a known key are.
 */
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { loadOrCreateIdentity } from '../../src/client/identity.js'
import { MembershipBook } from '../../src/client/membership-book.js'
import { openSqliteStore } from '../../src/client/storage/sqlite-store.js'
import { generateSigningKeyPair, randomBytes, SignatureDomain, signWithDomain } from '../../src/shared/crypto/index.js'
import {
  domainOf,
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

async function conversation() {
  const store = await openSqliteStore(':memory:')
  const identity = await loadOrCreateIdentity(store)
  await store.close()
  const nonce = randomBytes(16)
  const room = roomIdFor(nonce, identity.userPub)
  const sign = async (kind: RecordKind, body: Uint8Array) =>
    encodeRecord(kind, body, identity.certificate.bytes, await signWithDomain(domainOf(kind), identity.deviceSecret, recordSigningPayload(kind, body)))
  const doc = new Y.Doc()
  const records = doc.getMap<Uint8Array>('records')
  records.set('1.0', await sign(RecordKind.Genesis, encodeGenesisBody({ room, nonce, createdAt: Date.now() })))
  const book = new MembershipBook(room, identity)
  return { identity, book, records, sign, room }
}

describe('membership book', () => {
  it('folds the same records to the same membership when it folds them again', async () => {
    const { identity, book, records, sign } = await conversation()
    expect(await book.fold(records)).toBe(0)
    for (let i = 0; i < 5; i++) {
      const next = book.newEpoch()
      records.set(`1.${i + 1}`, await sign(RecordKind.Epoch, next.body))
      book.noteSeq(`1.${i + 1}`, i + 2)
      expect(await book.fold(records)).toBe(0)
    }
    expect(book.state.epoch).toBe(5)
    expect(book.isAdmin(identity.userId)).toBe(true)
    expect(await book.fold(records)).toBe(0)
    expect(book.state.epoch).toBe(5)
  })

  it('checks the signature again when other bytes stand under a key whose record verified, and folds without them', async () => {
    const { book, records, sign } = await conversation()
    await book.fold(records)
    const next = book.newEpoch()
    const good = await sign(RecordKind.Epoch, next.body)
    records.set('1.1', good)
    book.noteSeq('1.1', 2)
    expect(await book.fold(records)).toBe(0)
    expect(book.state.epoch).toBe(1)
    // The same record with its last signature byte flipped, under the same key.
    const forged = good.slice()
    forged[forged.length - 1]! ^= 1
    records.set('1.1', forged)
    expect(await book.fold(records)).toBe(1)
    expect(book.state.epoch).toBe(0)
    // And the genuine bytes fold again.
    records.set('1.1', good)
    expect(await book.fold(records)).toBe(0)
    expect(book.state.epoch).toBe(1)
  })

  it('applies folds in the order they were asked for: a fold of more records is not undone by an earlier one of fewer', async () => {
    const { identity, book, records, sign, room } = await conversation()
    // Genesis and 30 epochs, written as a device writes them (folding after each).
    const many = new Y.Doc().getMap<Uint8Array>('records')
    many.set('1.0', records.get('1.0')!)
    await book.fold(many)
    for (let i = 0; i < 30; i++) {
      const next = book.newEpoch()
      many.set(`1.${i + 1}`, await sign(RecordKind.Epoch, next.body))
      book.noteSeq(`1.${i + 1}`, i + 2)
      await book.fold(many)
    }
    expect(book.state.epoch).toBe(30)
    // A device that has checked none of them: each fold awaits its signature checks.
    const fresh = new MembershipBook(room, identity)
    for (let i = 0; i < 30; i++) fresh.noteSeq(`1.${i + 1}`, i + 2)
    // The fold of all 30 is asked for first, the fold of genesis alone second: the second
    // asked decides (without the order, the longer first fold finished last and stood).
    await Promise.all([fresh.fold(many), fresh.fold(records)])
    expect(fresh.state.epoch).toBe(0)
    // And the other way round, as when records arrive: the fold of all of them, asked last, stands.
    await Promise.all([fresh.fold(records), fresh.fold(many)])
    expect(fresh.state.epoch).toBe(30)
  })
})

describe('membership book, records not acknowledged yet', () => {
  it("folds this session's records after an earlier session's, whatever their client ids: a join after a leave the relay never acknowledged counts", async () => {
    const { identity: alice, records, sign, room } = await conversation()
    const bob = await person()
    // Two invites of Alice's, and Bob's join by the first: acknowledged, in relay order.
    const invite = async () => {
      const pair = generateSigningKeyPair()
      const body = encodeInviteBody({ room, invitePub: pair.publicKey, expiresAt: 0, maxUses: 0, history: 'full', createdAt: Date.now() })
      return { pair, record: await sign(RecordKind.Invite, body) }
    }
    const joinBy = async (inv: Awaited<ReturnType<typeof invite>>) => {
      const body = encodeJoinBody({ room, invitePub: inv.pair.publicKey, joiner: bob.identity.certificate.bytes, joinedAt: Date.now() })
      return encodeRecord(RecordKind.Join, body, new Uint8Array(0), await signWithDomain(SignatureDomain.Join, inv.pair.secretKey, recordSigningPayload(RecordKind.Join, body)))
    }
    const first = await invite()
    const book = new MembershipBook(room, bob.identity)
    records.set('1.1', first.record)
    records.set('1.2', await joinBy(first))
    book.noteSeq('1.0', 1)
    book.noteSeq('1.1', 2)
    book.noteSeq('1.2', 3)
    // Bob's leave, from a session whose (random) client id happened to be the higher: the relay
    // stored it and refused Bob before its acknowledgement came.
    const leave = await bob.sign(RecordKind.Leave, encodeMemberChangeBody({ room, userPub: bob.identity.userPub, at: Date.now() }))
    records.set(`${(2 ** 31).toString(36)}.0`, leave)
    await book.fold(records)
    expect(book.state.members.has(bob.identity.userId)).toBe(false)
    // This session: a fresh invite of Alice's, and Bob's join by it, from a lower client id.
    const second = await invite()
    records.set('2.0', second.record)
    records.set('2.1', await joinBy(second))
    book.wrote(['2.0', '2.1'])
    await book.fold(records)
    expect(book.state.members.has(bob.identity.userId)).toBe(true)
    expect(book.state.members.has(alice.userId)).toBe(true)
  })
})
