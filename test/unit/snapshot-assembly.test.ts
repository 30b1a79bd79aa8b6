import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { SnapshotAssembly } from '../../src/client/snapshot-assembly.js'
import { randomBytes } from '../../src/shared/crypto/index.js'
import { ErrorCode } from '../../src/shared/errors.js'
import { emptyMembership, type MembershipState } from '../../src/shared/membership.js'
import { setSyncInflate } from '../../src/shared/snapshot-deflate.js'
import { historyKeys, sealSnapshot } from '../../src/shared/snapshot-seal.js'

const ROOM = 'room-1'
const keys = new Map([
  [0, randomBytes(32)],
  [1, randomBytes(32)],
  [2, randomBytes(32)],
])
const ALICE_DEVICE = 'alice-device'
const MALLORY_DEVICE = 'mallory-device'

function stateOf(n: number): Uint8Array {
  const doc = new Y.Doc()
  doc.transact(() => {
    for (let i = 0; i < n; i++) doc.getMap('messages').set(`m${i}`, { t: `message ${i}` })
  })
  return Y.encodeStateAsUpdate(doc)
}

/** A sealed snapshot split into `parts` parts, as its writer uploads them. */
async function partsOf(state: Uint8Array, parts: number, coversSeq: number) {
  const sealed = await sealSnapshot(state, ROOM, 2, historyKeys(keys, 2)!)
  const snapshotId = randomBytes(16)
  const size = Math.ceil(sealed.length / parts)
  return {
    snapshotId,
    parts: Array.from({ length: parts }, (_, part) => ({ snapshotId, coversSeq, part, parts, bytes: sealed.subarray(part * size, (part + 1) * size) })),
  }
}

/** Membership whose latest snapshot record is `snapshotId`'s, signed by Alice. */
function membershipWith(snapshotId: Uint8Array, coversSeq: number, parts: number): MembershipState {
  const m = emptyMembership(ROOM)
  m.everDevices.set(ALICE_DEVICE, 'alice')
  m.everDevices.set(MALLORY_DEVICE, 'mallory')
  m.snapshot = { coversSeq, snapshotId, parts, by: 'alice' }
  return m
}

function assembly() {
  const refused: Array<{ code: ErrorCode; message: string }> = []
  let inflated = 0
  const a = new SnapshotAssembly(
    ROOM,
    (code, message) => refused.push({ code, message }),
    () => inflated++,
  )
  return { a, refused, inflated: () => inflated }
}

afterEach(() => setSyncInflate(true))

describe('snapshot assembly', () => {
  it('gives the state once every part is here and the latest record is its own, with what it covers and the last part’s row', async () => {
    const state = stateOf(200)
    const { snapshotId, parts } = await partsOf(state, 3, 40)
    const { a, refused } = assembly()
    const membership = membershipWith(snapshotId, 40, 3)
    a.add(parts[2]!, 2, ALICE_DEVICE, 51)
    a.add(parts[0]!, 2, ALICE_DEVICE, 52)
    expect(a.take(membership, keys)).toBeUndefined()
    a.add(parts[1]!, 2, ALICE_DEVICE, 53)
    expect(a.take(membership, keys)).toEqual({ state, coversSeq: 40, seq: 53 })
    // Taken once.
    expect(a.take(membership, keys)).toBeUndefined()
    expect(refused).toEqual([])
  })

  it('waits for the record: a snapshot the latest record does not name is kept until it does', async () => {
    const { snapshotId, parts } = await partsOf(stateOf(10), 1, 9)
    const { a } = assembly()
    a.add(parts[0]!, 2, ALICE_DEVICE, 10)
    expect(a.take(emptyMembership(ROOM), keys)).toBeUndefined()
    expect(a.take(membershipWith(randomBytes(16), 9, 1), keys)).toBeUndefined()
    expect(a.take(membershipWith(snapshotId, 9, 1), keys)?.seq).toBe(10)
  })

  it('takes no part from a second device, or under a second key, into one snapshot', async () => {
    const { snapshotId, parts } = await partsOf(stateOf(50), 2, 20)
    const { a } = assembly()
    const membership = membershipWith(snapshotId, 20, 2)
    a.add(parts[0]!, 2, ALICE_DEVICE, 30)
    a.add(parts[1]!, 2, MALLORY_DEVICE, 31)
    a.add(parts[1]!, 0, ALICE_DEVICE, 31)
    expect(a.take(membership, keys)).toBeUndefined()
    a.add(parts[1]!, 2, ALICE_DEVICE, 32)
    expect(a.take(membership, keys)?.seq).toBe(32)
  })

  it('gathers an honest snapshot whatever one member sends before it: each device has a place of its own', async () => {
    const { a } = assembly()
    // Mallory's device starts many snapshots and finishes none; each replaces the one before.
    for (let i = 0; i < 10; i++) a.add((await partsOf(stateOf(3), 2, 1_000_000)).parts[0]!, 2, MALLORY_DEVICE, 10 + i)
    const { snapshotId, parts } = await partsOf(stateOf(20), 2, 25)
    a.add(parts[0]!, 2, ALICE_DEVICE, 30)
    // A set of Mallory's completes between the honest snapshot's last part and its record.
    a.add(parts[1]!, 2, ALICE_DEVICE, 31)
    const fake = await partsOf(stateOf(1), 1, 31)
    a.add(fake.parts[0]!, 2, MALLORY_DEVICE, 32)
    expect(a.take(membershipWith(snapshotId, 25, 2), keys)?.seq).toBe(31)
  })

  it('applies nothing sent by a device of someone other than the record’s signer', async () => {
    const { snapshotId, parts } = await partsOf(stateOf(5), 1, 3)
    const { a, refused } = assembly()
    a.add(parts[0]!, 2, MALLORY_DEVICE, 4)
    expect(a.take(membershipWith(snapshotId, 3, 1), keys)).toBeUndefined()
    expect(refused).toEqual([])
  })

  it('refuses a tampered snapshot with EnvelopeRejected and gives nothing to apply', async () => {
    const { snapshotId, parts } = await partsOf(stateOf(20), 1, 7)
    const tampered = { ...parts[0]!, bytes: parts[0]!.bytes.slice() }
    tampered.bytes[tampered.bytes.length - 5]! ^= 1
    const { a, refused } = assembly()
    a.add(tampered, 2, ALICE_DEVICE, 8)
    expect(a.take(membershipWith(snapshotId, 7, 1), keys)).toBeUndefined()
    expect(refused.map((r) => r.code)).toEqual([ErrorCode.EnvelopeRejected])
  })

  it('needs the first epoch’s key: a from-join member opens no snapshot', async () => {
    const { snapshotId, parts } = await partsOf(stateOf(5), 1, 3)
    const { a, refused } = assembly()
    a.add(parts[0]!, 2, ALICE_DEVICE, 4)
    expect(a.take(membershipWith(snapshotId, 3, 1), new Map([[2, keys.get(2)!]]))).toBeUndefined()
    expect(refused).toEqual([])
  })

  it('keeps a snapshot it lacks a key for while that key is to come, and opens it once it comes', async () => {
    const state = stateOf(5)
    const { snapshotId, parts } = await partsOf(state, 1, 3)
    const { a, refused } = assembly()
    a.add(parts[0]!, 2, ALICE_DEVICE, 4)
    const m = membershipWith(snapshotId, 3, 1)
    expect(a.take(m, new Map([0, 2].map((e) => [e, keys.get(e)!])), () => true)).toBeUndefined()
    expect(a.take(m, keys)).toEqual({ state, coversSeq: 3, seq: 4 })
    expect(a.take(m, keys)).toBeUndefined()
    expect(refused).toEqual([])
  })

  it('where inflating is asynchronous (a browser), gives the state to the pass after it settles', async () => {
    setSyncInflate(false)
    const state = stateOf(300)
    const { snapshotId, parts } = await partsOf(state, 2, 60)
    const { a, inflated } = assembly()
    const membership = membershipWith(snapshotId, 60, 2)
    for (const [i, p] of parts.entries()) a.add(p, 2, ALICE_DEVICE, 70 + i)
    expect(a.take(membership, keys)).toBeUndefined()
    expect(a.inflating).toBeDefined()
    await a.inflating
    expect(inflated()).toBe(1)
    expect(a.inflating).toBeUndefined()
    expect(a.take(membership, keys)).toEqual({ state, coversSeq: 60, seq: 71 })
  })
})
