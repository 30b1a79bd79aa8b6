import * as encoding from 'lib0/encoding'
import * as Y from 'yjs'
import { describe, expect, it } from 'vitest'
import { lostClocksFiller } from '../../src/client/lost-history.js'
import { buildUpdate } from '../../src/shared/yjs-v1.js'

const doc = (clientID: number) => {
  const d = new Y.Doc()
  d.clientID = clientID
  return d
}
const fill = (d: Y.Doc) => {
  for (const u of lostClocksFiller(d)) Y.applyUpdate(d, u)
}

describe('lost history', () => {
  it('fills the unreadable start of a client whose later changes wait, and they go in', () => {
    const alice = doc(7)
    alice.getMap('messages').set('a.1', 'before you came')
    const before = Y.encodeStateVector(alice)
    alice.getMap('messages').set('a.2', 'after')
    const laptop = doc(99)
    Y.applyUpdate(laptop, Y.encodeStateAsUpdate(alice, before))
    expect(laptop.getMap('messages').size).toBe(0)
    expect(laptop.store.pendingStructs).not.toBeNull()
    fill(laptop)
    expect(laptop.store.pendingStructs).toBeNull()
    expect(laptop.getMap('messages').toJSON()).toEqual({ 'a.2': 'after' })
  })

  it('lets no one erase what another client writes later by naming a clock far ahead in it', () => {
    // Mallory's item claims Alice's client 7 at clock 1,000 as its origin.
    const e = encoding.createEncoder()
    encoding.writeUint8(e, 0x88) // origin • ContentAny
    encoding.writeVarUint(e, 7)
    encoding.writeVarUint(e, 1000)
    encoding.writeVarUint(e, 1)
    encoding.writeUint8(e, 0x7d) // Any: integer
    encoding.writeVarInt(e, 5)
    const crafted = buildUpdate([{ client: 66, startClock: 0, count: 1, bytes: encoding.toUint8Array(e) }])
    const laptop = doc(99)
    Y.applyUpdate(laptop, crafted)
    expect(laptop.store.pendingStructs).not.toBeNull()
    fill(laptop)
    // Mallory's item keeps waiting; Alice's client is not touched.
    expect(Y.getState(laptop.store, 7)).toBe(0)
    const alice = doc(7)
    alice.getMap('messages').set('a.1', 'mine')
    Y.applyUpdate(laptop, Y.encodeStateAsUpdate(alice))
    expect(laptop.getMap('messages').get('a.1')).toBe('mine')
  })

  it('fills nothing when nothing waits', () => {
    const d = doc(1)
    d.getMap('messages').set('x', 1)
    expect(lostClocksFiller(d)).toEqual([])
  })
})
