import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { ShardedMap, SHARDS, SPLIT_AT, shardYMap } from '../../src/shared/sharded-map.js'

type Op = { kind: 'set'; key: string; value: number } | { kind: 'delete'; key: string } | { kind: 'clear' }

const sorted = <T>(entries: Iterable<[string, T]>) => [...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))

describe('sharded map', () => {
  it('answers as a Map does across the split, whatever is set, deleted and cleared', () => {
    // Keys from a small alphabet so sets overwrite and deletes hit; enough of them to split.
    const key = fc.stringMatching(/^[a-f0-9]{1,4}$/)
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 20, arbitrary: fc.record({ kind: fc.constant('set' as const), key, value: fc.integer() }) },
      { weight: 4, arbitrary: fc.record({ kind: fc.constant('delete' as const), key }) },
      { weight: 1, arbitrary: fc.constant({ kind: 'clear' as const }) },
    )
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), fc.integer({ min: 0, max: SPLIT_AT + 200 }), (ops, prefill) => {
        const plain = new Map<string, number>()
        const sharded = new ShardedMap<number>()
        for (let i = 0; i < prefill; i++) {
          plain.set(`p${i}`, i)
          sharded.set(`p${i}`, i)
        }
        for (const o of ops) {
          if (o.kind === 'set') {
            expect(sharded.set(o.key, o.value)).toBe(sharded)
            plain.set(o.key, o.value)
          } else if (o.kind === 'delete') expect(sharded.delete(o.key)).toBe(plain.delete(o.key))
          else {
            sharded.clear()
            plain.clear()
          }
          expect(sharded.size).toBe(plain.size)
        }
        for (const k of ['0', 'a', 'ff', 'p1', `p${SPLIT_AT}`]) {
          expect(sharded.has(k)).toBe(plain.has(k))
          expect(sharded.get(k)).toBe(plain.get(k))
        }
        expect(sorted(sharded)).toEqual(sorted(plain))
        expect(sorted(sharded.entries())).toEqual(sorted(plain.entries()))
        expect([...sharded.keys()].sort()).toEqual([...plain.keys()].sort())
        const fromForEach: [string, number][] = []
        sharded.forEach((v, k, m) => {
          expect(m).toBe(sharded)
          fromForEach.push([k, v])
        })
        expect(sorted(fromForEach)).toEqual(sorted(plain))
        expect([...sharded.values()].sort()).toEqual([...plain.values()].sort())
      }),
      { numRuns: 60 },
    )
  })

  it('spreads message ids over every shard once split, none holding more than twice its share', () => {
    const ids = new ShardedMap<number>()
    const n = SHARDS * 1000
    for (let i = 0; i < n; i++) ids.set(`u1.${(1764400000000 + i).toString(36)}${Buffer.from(crypto.getRandomValues(new Uint8Array(6))).toString('base64url')}`, i)
    const shards = (ids as unknown as { shards: Map<string, number>[] }).shards
    expect(shards).toHaveLength(SHARDS)
    for (const shard of shards) expect(shard.size).toBeLessThan((2 * n) / SHARDS)
    expect(ids.size).toBe(n)
  })

  it('takes a Map’s entries at construction', () => {
    const m = new ShardedMap(new Map([['a', 1], ['b', 2]]))
    expect(m.get('b')).toBe(2)
    expect(m.size).toBe(2)
    expect(String(m)).toBe('[object ShardedMap]')
  })
})

describe('shardYMap', () => {
  it('leaves a Y.Map reading and syncing as a plain one does, past the split', () => {
    const plainDoc = new Y.Doc()
    const shardedDoc = new Y.Doc()
    const sharded = shardYMap(shardedDoc.getMap<string>('messages'))
    expect(sharded._map).toBeInstanceOf(ShardedMap)
    const writer = new Y.Doc()
    const source = writer.getMap<string>('messages')
    writer.on('update', (u: Uint8Array) => {
      Y.applyUpdate(plainDoc, u)
      Y.applyUpdate(shardedDoc, u)
    })
    for (let i = 0; i < SPLIT_AT + 500; i++) source.set(`m${i}`, `text ${i}`)
    for (let i = 0; i < 300; i += 3) source.delete(`m${i}`)
    writer.transact(() => {
      for (let i = 1; i < 300; i += 3) source.set(`m${i}`, 'edited')
    })
    const plain = plainDoc.getMap<string>('messages')
    expect(sharded.size).toBe(plain.size)
    expect(sharded.toJSON()).toEqual(plain.toJSON())
    expect(sharded.get('m1')).toBe('edited')
    expect(sharded.has('m0')).toBe(false)
    expect([...sharded.keys()].sort()).toEqual([...plain.keys()].sort())
    // What each holds encodes the same, and a document synced from the sharded one agrees.
    expect(Y.encodeStateAsUpdate(shardedDoc)).toEqual(Y.encodeStateAsUpdate(plainDoc))
    const copy = new Y.Doc()
    Y.applyUpdate(copy, Y.encodeStateAsUpdate(shardedDoc))
    expect(copy.getMap('messages').toJSON()).toEqual(plain.toJSON())
  })

  it('moves the entries a Y.Map holds already and is idempotent', () => {
    const doc = new Y.Doc()
    const map = doc.getMap<number>('m')
    map.set('a', 1)
    const before = shardYMap(map)._map
    expect(shardYMap(map)._map).toBe(before)
    expect(map.get('a')).toBe(1)
    const seen: string[] = []
    map.observe((e) => seen.push(...e.keysChanged))
    map.set('b', 2)
    expect(seen).toEqual(['b'])
  })
})
