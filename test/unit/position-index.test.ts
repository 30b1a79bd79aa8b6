import { describe, expect, it } from 'vitest'
import { PositionIndex } from '../../src/client/position-index.js'

describe('position index', () => {
  it('returns the ids stored in (after, through], in position order, whatever order they came in', () => {
    const index = new PositionIndex()
    const added: Array<[number, string]> = []
    let seed = 11
    const rand = (k: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31
      return seed % k
    }
    for (let i = 0; i < 500; i++) {
      // Mostly rising, sometimes late, sometimes several at one position (one envelope).
      const seq = rand(10) === 0 ? rand(200) : 2 * i + rand(3)
      const id = `m${i}`
      if (rand(4) === 0) index.addAll([[seq, id]])
      else index.add(seq, id)
      added.push([seq, id])
    }
    expect(index.size).toBe(500)
    const seqOf = new Map(added.map(([seq, id]) => [id, seq]))
    for (let q = 0; q < 200; q++) {
      const after = rand(1100) - 50
      const through = after + rand(300)
      const expected = added.filter(([seq]) => seq > after && seq <= through).map(([, id]) => id)
      const got = index.between(after, through)
      // Each once, and in position order.
      expect([...got].sort()).toEqual([...expected].sort())
      expect(got.map((id) => seqOf.get(id)!)).toEqual(got.map((id) => seqOf.get(id)!).sort((x, y) => x - y))
    }
    expect(index.between(5, 5)).toEqual([])
    expect(index.between(9, 3)).toEqual([])
  })

  it('loads many at once in any order', () => {
    const index = new PositionIndex()
    index.add(5, 'e')
    index.addAll([
      [9, 'i'],
      [1, 'a'],
      [5, 'e2'],
    ])
    expect(index.between(0, 100)).toEqual(['a', 'e', 'e2', 'i'])
    expect(index.between(1, 5)).toEqual(['e', 'e2'])
  })
})
