import * as encoding from 'lib0/encoding'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { checkSnapshotState } from '../../src/client/snapshot-state.js'

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
    expect(checkSnapshotState(state)).toEqual({ state, clipped: 0 })
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
})
