import * as encoding from 'lib0/encoding'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { checkSnapshotState, withheldUpTo } from '../../src/client/snapshot-state.js'

/** A whole document's state with `n` map entries written by client 7. */
function stateOf(n: number): Uint8Array {
  const doc = new Y.Doc()
  doc.clientID = 7
  doc.transact(() => {
    for (let i = 0; i < n; i++) doc.getMap('messages').set(`m${i}`, i)
  })
  return Y.encodeStateAsUpdate(doc)
}

/** `state` with its (empty) delete set replaced by `ranges` of `client`. */
function withDeletes(state: Uint8Array, client: number, ranges: Array<[number, number]>): Uint8Array {
  const e = encoding.createEncoder()
  // stateOf writes no deletions: its delete set is the last byte, 0.
  encoding.writeUint8Array(e, state.subarray(0, state.length - 1))
  encoding.writeVarUint(e, 1)
  encoding.writeVarUint(e, client)
  encoding.writeVarUint(e, ranges.length)
  for (const [clock, len] of ranges) {
    encoding.writeVarUint(e, clock)
    encoding.writeVarUint(e, len)
  }
  return encoding.toUint8Array(e)
}

describe('snapshot state check', () => {
  it('takes a state of more structs than a network update may carry: its size bounds the work', () => {
    const state = stateOf(110_000)
    const checked = checkSnapshotState(state)
    // The very bytes, not a copy (a deep comparison of 2.5 MB would take seconds).
    expect(checked.state).toBe(state)
    expect(checked.clipped).toBe(0)
  })

  it('keeps deletions of its own structs as they are', () => {
    const state = withDeletes(stateOf(10), 7, [[2, 3]])
    expect(checkSnapshotState(state)).toEqual({ state, clipped: 0, withheld: [] })
  })

  it('leaves out deletions past its own structs: another member’s later changes are not deleted', () => {
    const forged = withDeletes(stateOf(10), 7, [
      [2, 3],
      [8, 100],
      [200, 10],
    ])
    const { state, clipped } = checkSnapshotState(forged)
    expect(clipped).toBe(2)
    const doc = new Y.Doc()
    Y.applyUpdate(doc, state)
    expect(doc.store.pendingDs).toBeNull()
    // A client the snapshot holds nothing of: every deletion of it goes.
    const other = checkSnapshotState(withDeletes(stateOf(3), 99, [[0, 5]]))
    expect(other.clipped).toBe(1)
    const doc2 = new Y.Doc()
    Y.applyUpdate(doc2, other.state)
    expect(doc2.store.pendingDs).toBeNull()
    expect(doc2.getMap('messages').size).toBe(3)
  })

  it('refuses bytes that are not an update with a typed error', () => {
    expect(() => checkSnapshotState(Uint8Array.of(1, 2, 3))).toThrow(expect.objectContaining({ code: 'malformed' }))
  })

  it('withholds a run of GC that ends a client, and gives back of it only what a later change shows real', () => {
    // Alice's client 5 wrote two entries; a member's snapshot claims her next 100 clocks as GC.
    const alice = new Y.Doc()
    alice.clientID = 5
    alice.getMap('messages').set('a1', 1)
    alice.getMap('messages').set('a2', 2)
    const real = Y.encodeStateAsUpdate(alice)
    const e = encoding.createEncoder()
    // One group: client 5 from clock 0, her two items as they were, then GC of 100.
    const parsedEnd = real.length - 1
    encoding.writeVarUint(e, 1)
    encoding.writeVarUint(e, 3)
    encoding.writeVarUint(e, 5)
    encoding.writeVarUint(e, 0)
    // The items: the real update's bytes after its group header (1 group, 2 structs, client 5, clock 0).
    encoding.writeUint8Array(e, real.subarray(4, parsedEnd))
    encoding.writeUint8(e, 0)
    encoding.writeVarUint(e, 100)
    encoding.writeVarUint(e, 0)
    const forged = encoding.toUint8Array(e)
    const checked = checkSnapshotState(forged)
    expect(checked.withheld).toEqual([{ client: 5, start: 2, end: 102 }])
    const fresh = new Y.Doc()
    Y.applyUpdate(fresh, checked.state)
    expect(fresh.getMap('messages').toJSON()).toEqual({ a1: 1, a2: 2 })
    // Alice writes on from her real next clock: nothing of the run is real, her change shows.
    const sv = Y.encodeStateVector(alice)
    alice.getMap('messages').set('a3', 3)
    const next = Y.encodeStateAsUpdate(alice, sv)
    expect(withheldUpTo(checked.withheld[0]!, 2)).toBeUndefined()
    Y.applyUpdate(fresh, next)
    expect(fresh.getMap('messages').get('a3')).toBe(3)
    // An honest run (Alice's change begins after it) goes in whole first.
    const gc = withheldUpTo({ client: 5, start: 3, end: 10 }, 10)!
    Y.applyUpdate(fresh, gc)
    expect(Y.getState(fresh.store, 5)).toBe(10)
  })
})
