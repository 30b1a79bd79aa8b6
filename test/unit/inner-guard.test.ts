import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { checkInnerUpdate, INNER_MESSAGE_BATCHES, INNER_MESSAGES, INNER_PROFILES, ownedBy } from '../../src/client/inner-guard.js'

/** The ownership rule as receivers have always applied it, by substring. */
const ownerOfKey = (root: string, key: string): string => (root === INNER_PROFILES ? key : key.slice(0, key.indexOf('.')))

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
})
