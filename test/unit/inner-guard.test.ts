import * as encoding from 'lib0/encoding'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { applyUpdate } from '../../src/shared/update-reader.js'
import { checkInnerUpdate, INNER_MESSAGE_BATCHES, INNER_MESSAGES, INNER_PROFILES, ownedBy } from '../../src/client/inner-guard.js'

/**
 * The ownership rule as receivers apply it, by substring: a message key's owner precedes its
 * first '.', a profile key's its first '@' (a name said again at an epoch, restated-context.ts).
 */
const ownerOfKey = (root: string, key: string): string => (root === INNER_PROFILES ? (key.includes('@') ? key.slice(0, key.indexOf('@')) : key) : key.slice(0, key.indexOf('.')))

const alice = 'A'.repeat(43)
const bob = 'B'.repeat(43)

/** An update of a fresh document with one client id, made by `write`. */
function updateOf(client: number, write: (doc: Y.Doc) => void): Uint8Array {
  const doc = new Y.Doc()
  doc.clientID = client
  let out: Uint8Array = new Uint8Array()
  doc.on('update', (u: Uint8Array) => {
    out = u
  })
  doc.transact(() => write(doc))
  return out
}

describe('inner authorship guard', () => {
  it('decides ownership of a key exactly as the owner-of-key rule does, for every shape of key', () => {
    const keys = [
      `${alice}.x`,
      `${alice}.`,
      `${alice}.a.b`,
      alice,
      `${alice}x`,
      `${alice}xy`,
      `${alice.slice(1)}.x`,
      `.${alice}`,
      `${bob}.x`,
      '',
      '.',
      `${alice.slice(0, 20)}.${alice.slice(20)}`,
      `${alice}@3`,
      `${alice}@`,
      `${alice}x@3`,
      `${alice.slice(1)}@3`,
      `@${alice}`,
      `${bob}@3`,
    ]
    for (const root of [INNER_MESSAGES, INNER_PROFILES])
      for (const key of keys) for (const user of [alice, bob]) expect(ownedBy(root, key, user), `${root} ${key} ${user}`).toBe(ownerOfKey(root, key) === user)
  })

  it("accepts a member's own messages, refuses one written under another member's id, and resolves items inside the update", () => {
    const doc = new Y.Doc()
    const own = updateOf(7, (d) => {
      d.getMap(INNER_MESSAGES).set(`${alice}.1`, { t: 'hi' })
      // Overwritten in the same update: the second item's parent is found through the first.
      d.getMap(INNER_MESSAGES).set(`${alice}.1`, { t: 'hi!' })
    })
    const ok = checkInnerUpdate(doc, own, { deviceId: 'alice-device', userId: alice }, new Map())
    expect(ok).toEqual({ ok: true, bind: [7], messageKeys: [`${alice}.1`, `${alice}.1`] })
    const forged = updateOf(8, (d) => d.getMap(INNER_MESSAGES).set(`${bob}.1`, { t: 'not bob' }))
    expect(checkInnerUpdate(doc, forged, { deviceId: 'alice-device', userId: alice }, new Map())).toEqual({
      ok: false,
      reason: 'writes messages entry owned by another member',
    })
  })

  it("refuses a batch signature entry written under another member's id, and accepts the member's own", () => {
    const doc = new Y.Doc()
    const own = updateOf(9, (d) => {
      d.getMap(INNER_MESSAGE_BATCHES).set(`${alice}.b1`, { s: new Uint8Array(64), d: 'alice-device', h: new Uint8Array(64) })
      d.getMap(INNER_MESSAGES).set(`${alice}.1`, { t: 'hi', b: `${alice}.b1`, i: 0 })
    })
    expect(checkInnerUpdate(doc, own, { deviceId: 'alice-device', userId: alice }, new Map())).toEqual({ ok: true, bind: [9], messageKeys: [`${alice}.1`] })
    const forged = updateOf(10, (d) => d.getMap(INNER_MESSAGE_BATCHES).set(`${bob}.b1`, { s: new Uint8Array(64), d: 'alice-device', h: new Uint8Array(32) }))
    expect(checkInnerUpdate(doc, forged, { deviceId: 'alice-device', userId: alice }, new Map())).toEqual({
      ok: false,
      reason: 'writes messageBatches entry owned by another member',
    })
  })
  describe('an item that continues content this device has not seen', () => {
    const BOB = 5
    const ALICE = 8
    /** Alice's update, made by hand: one item (origin • ContentAny, no parent on the wire) continuing (client, clock). */
    function continuing(client: number, clock: number, from = ALICE): Uint8Array {
      const e = encoding.createEncoder()
      encoding.writeVarUint(e, 1)
      encoding.writeVarUint(e, 1)
      encoding.writeVarUint(e, from)
      encoding.writeVarUint(e, 0)
      encoding.writeUint8(e, 0x88)
      encoding.writeVarUint(e, client)
      encoding.writeVarUint(e, clock)
      encoding.writeVarUint(e, 1)
      encoding.writeAny(e, { t: 'forged by alice' })
      encoding.writeVarUint(e, 0)
      return encoding.toUint8Array(e)
    }
    const bobsFirst = () => {
      const bobDoc = new Y.Doc()
      bobDoc.clientID = BOB
      const updates: Uint8Array[] = []
      bobDoc.on('update', (u: Uint8Array) => updates.push(u))
      bobDoc.getMap(INNER_MESSAGES).set(`${bob}.1`, { t: 'bob 1' })
      bobDoc.getMap(INNER_MESSAGES).set(`${bob}.2`, { t: 'bob 2' })
      return updates
    }

    it("is refused when another member wrote it: Yjs would land it in their entry once their next write comes", () => {
      const [first, second] = bobsFirst()
      const receiver = new Y.Doc()
      const bindings = new Map([[BOB, 'bob-device']])
      applyUpdate(receiver, first!)
      const next = Y.getState(receiver.store, BOB)
      const forged = continuing(BOB, next)
      expect(checkInnerUpdate(receiver, forged, { deviceId: 'alice-device', userId: alice }, bindings, () => undefined)).toEqual({
        ok: false,
        reason: 'continues content this device has not seen, written by another member',
      })
      // What it would have done: accepted, it waits in Yjs and takes Bob's next entry.
      applyUpdate(receiver, forged)
      applyUpdate(receiver, second!)
      expect(receiver.getMap(INNER_MESSAGES).get(`${bob}.2`)).toEqual({ t: 'forged by alice' })
    })

    it('is refused when nobody this device knows wrote it, and accepted from the same person or device', () => {
      const receiver = new Y.Doc()
      const who = { deviceId: 'alice-device', userId: alice }
      expect(checkInnerUpdate(receiver, continuing(77, 3), who, new Map()).ok).toBe(false)
      // Alice's own client, or her other device's: the entry was hers when it was first written.
      expect(checkInnerUpdate(receiver, continuing(ALICE, 3, 9), who, new Map([[ALICE, 'alice-device']])).ok).toBe(true)
      const owners = (device: string) => (device === 'alice-laptop' ? alice : device === 'bob-device' ? bob : undefined)
      expect(checkInnerUpdate(receiver, continuing(31, 3), who, new Map([[31, 'alice-laptop']]), owners).ok).toBe(true)
      expect(checkInnerUpdate(receiver, continuing(31, 3), who, new Map([[31, 'bob-device']]), owners).ok).toBe(false)
    })

    it('is checked against the entry it continues when this device holds it', () => {
      const [first] = bobsFirst()
      const receiver = new Y.Doc()
      applyUpdate(receiver, first!)
      expect(checkInnerUpdate(receiver, continuing(BOB, 0), { deviceId: 'alice-device', userId: alice }, new Map([[BOB, 'bob-device']]))).toEqual({
        ok: false,
        reason: 'writes messages entry owned by another member',
      })
    })
  })

  it('resolves origins inside an update by ranges: a deleted item claiming a million clocks costs one entry', () => {
    // Groups of one deleted item each (3 bytes claim 999,999 clocks), then one item whose
    // parent is not a root, so the update's own items are looked up.
    const groups = 16
    const e = encoding.createEncoder()
    encoding.writeVarUint(e, groups + 1)
    for (let g = 0; g < groups; g++) {
      encoding.writeVarUint(e, 1)
      encoding.writeVarUint(e, 1_000_000 + groups - g)
      encoding.writeVarUint(e, 0)
      encoding.writeUint8(e, 0x01)
      encoding.writeVarUint(e, 1)
      encoding.writeVarString(e, 'x')
      encoding.writeVarUint(e, 999_999)
    }
    encoding.writeVarUint(e, 1)
    encoding.writeVarUint(e, 1)
    encoding.writeVarUint(e, 0)
    encoding.writeUint8(e, 0x01)
    encoding.writeVarUint(e, 0)
    encoding.writeVarUint(e, 2)
    encoding.writeVarUint(e, 0)
    encoding.writeVarUint(e, 1)
    encoding.writeVarUint(e, 0)
    const update = encoding.toUint8Array(e)
    expect(update.length).toBeLessThan(256)
    const t0 = performance.now()
    const verdict = checkInnerUpdate(new Y.Doc(), update, { deviceId: 'd', userId: alice }, new Map())
    // 16 million clocks, one entry per clock, took ~9 s: by ranges it is a few lookups.
    expect(performance.now() - t0).toBeLessThan(1_000)
    expect(verdict.ok).toBe(true)
  })
})
