import * as encoding from 'lib0/encoding'
import { describe, expect, it } from 'vitest'
import { decodeMessageSeqs, encodeMessageSeqs } from '../../src/client/conversation-record.js'

describe('message positions (mseqs format 1)', () => {
  it('round-trips ASCII ids and any other string, byte for byte as writeVarString writes them', () => {
    const entries: Array<[string, number]> = [
      [`${'A'.repeat(43)}.abc_-`, 1],
      ['ünïcødé.✓', 2],
      ['', 3],
      ['x'.repeat(300), 2 ** 40],
    ]
    // All ASCII (the fast path), and with one other string among them (the general one).
    for (const list of [entries.filter(([k]) => !k.includes('✓')), entries]) {
      const bytes = encodeMessageSeqs(list)
      const reference = encoding.createEncoder()
      encoding.writeUint8(reference, 1)
      encoding.writeVarUint(reference, list.length)
      for (const [k, s] of list) {
        encoding.writeVarString(reference, k)
        encoding.writeVarUint(reference, s)
      }
      expect(bytes).toEqual(encoding.toUint8Array(reference))
      const out = new Map<string, number>()
      decodeMessageSeqs(bytes, out)
      expect([...out]).toEqual(list)
    }
  })
})
