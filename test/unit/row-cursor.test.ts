import { describe, expect, it } from 'vitest'
import { MAX_ACKED_AHEAD, RowCursor } from '../../src/client/row-cursor.js'

const row = (seq: number, client = 1, clock = seq) => ({ seq, client, clock, len: 1 })

describe('row cursor', () => {
  it('moves with rows received and applied, never back', () => {
    const cursor = new RowCursor()
    cursor.restore(4)
    expect(cursor.received(3)).toBeUndefined()
    expect(cursor.received(4)).toBeUndefined()
    expect(cursor.received(9)).toBe(9)
    expect(cursor.through).toBe(9)
  })

  it('stops before a row that waits in Yjs for its predecessors, and passes it once it integrates', () => {
    const cursor = new RowCursor()
    const integrated = new Set([5, 6, 8])
    const first = cursor.indexRows([row(5), row(6), row(7), row(8)], (r) => integrated.has(r.seq))
    expect(first.maxSeq).toBe(6)
    expect(cursor.waiting).toBe(1)
    cursor.received(first.maxSeq)
    integrated.add(7).add(9)
    const second = cursor.indexRows([row(9)], (r) => integrated.has(r.seq))
    // The row that waited is in the index again, for the keys it carried.
    expect(second.index.map((r) => r.seq)).toEqual([7, 9])
    expect(second.maxSeq).toBe(9)
    expect(cursor.waiting).toBe(0)
  })

  it('takes our own acknowledged row only right after it; one further ahead joins once the rows below are held', () => {
    const cursor = new RowCursor()
    cursor.restore(10)
    expect(cursor.ownRowAcked(13)).toBeUndefined()
    expect(cursor.ownRowAcked(12)).toBeUndefined()
    expect(cursor.through).toBe(10)
    // Row 11 came from someone else: received, the cursor reaches our rows 12 and 13 at once.
    expect(cursor.received(11)).toBe(13)
    expect(cursor.ownRowAcked(14)).toBe(14)
  })

  it('forgets acknowledged rows that rows received passed', () => {
    const cursor = new RowCursor()
    cursor.ownRowAcked(5)
    expect(cursor.received(7)).toBe(7)
    expect(cursor.received(8)).toBe(8)
    expect(cursor.relayHolds(9)).toBe(9)
  })

  it('takes the relay at its word for rows it says this device holds', () => {
    const cursor = new RowCursor()
    cursor.ownRowAcked(31)
    expect(cursor.relayHolds(0)).toBeUndefined()
    expect(cursor.relayHolds(30)).toBe(31)
  })

  it('remembers a bounded number of rows acknowledged ahead', () => {
    const cursor = new RowCursor()
    for (let i = 0; i < MAX_ACKED_AHEAD + 10; i++) cursor.ownRowAcked(i + 2)
    expect(cursor.received(1)).toBe(MAX_ACKED_AHEAD + 1)
  })
  it('keeps 200,000 rows waiting for predecessors in one pass, and stops before the first', () => {
    const cursor = new RowCursor()
    const rows = Array.from({ length: 200_000 }, (_, i) => ({ seq: i + 2, client: 1, clock: i + 1, len: 1 }))
    const t0 = performance.now()
    const { maxSeq } = cursor.indexRows([{ seq: 1, client: 2, clock: 0, len: 1 }, ...rows], (row) => row.client === 2)
    expect(performance.now() - t0).toBeLessThan(1_000)
    expect(maxSeq).toBe(1)
    expect(cursor.waiting).toBe(200_000)
  })
})
