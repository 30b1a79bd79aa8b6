import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { HeldEnvelopes, MAX_HELD } from '../../src/client/held-envelopes.js'

const envelope = (key: string, seq: number, part?: boolean) => (part ? { key, seq, bytes: Uint8Array.of(seq), part } : { key, seq, bytes: Uint8Array.of(seq) })

describe('held envelopes', () => {
  it('holds an envelope once and gives them all back, in the order held, once records came', () => {
    const held = new HeldEnvelopes()
    expect(held.add(envelope('1.0', 9))).toBe(true)
    expect(held.add(envelope('1.0', 9))).toBe(false)
    held.add(envelope('1.1', 4))
    expect(held.take(false)).toEqual([])
    expect(held.take(true).map((e) => e.key)).toEqual(['1.0', '1.1'])
    expect(held.size).toBe(0)
    expect(held.take(true)).toEqual([])
  })

  it('gives them back on the next pass once asked to, and only on that one', () => {
    const held = new HeldEnvelopes()
    held.addForSnapshot(envelope('2.0', 3))
    held.addForSnapshot(envelope('2.0', 3))
    held.retrySoon()
    expect(held.due).toBe(true)
    expect(held.take(false)).toHaveLength(1)
    expect(held.due).toBe(false)
    held.add(envelope('2.1', 5))
    expect(held.take(false)).toEqual([])
  })

  it('lets the oldest go once the bound is reached', () => {
    const held = new HeldEnvelopes()
    for (let i = 0; i < MAX_HELD + 1; i++) held.add(envelope(`3.${i}`, i + 1))
    expect(held.size).toBe(MAX_HELD)
    expect(held.has('3.0')).toBe(false)
    expect(held.has(`3.${MAX_HELD}`)).toBe(true)
  })

  it('keeps a snapshot from covering the first row held', () => {
    const held = new HeldEnvelopes()
    expect(held.coverableThrough(40)).toBe(40)
    held.add(envelope('4.0', 31))
    held.add(envelope('4.1', 12))
    expect(held.coverableThrough(40)).toBe(11)
  })

  it('survives a restart, read back from the outer log (part rows too; envelopes gone from it dropped)', () => {
    const held = new HeldEnvelopes()
    held.add(envelope('5.0', 7, true))
    held.add(envelope('5.1', 8))
    held.add(envelope('5.2', 9))
    const log = new Y.Doc().getMap<Uint8Array>('log')
    log.set('5.0', Uint8Array.of(70))
    log.set('5.1', Uint8Array.of(80))
    const again = new HeldEnvelopes()
    again.restore(held.encode(), log)
    expect(again.all).toEqual([
      { key: '5.0', seq: 7, bytes: Uint8Array.of(70), part: true },
      { key: '5.1', seq: 8, bytes: Uint8Array.of(80) },
    ])
  })
})
