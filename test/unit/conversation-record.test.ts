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
    const bytes = encodeMessageSeqs(entries)
    const reference = encoding.createEncoder()
    encoding.writeUint8(reference, 1)
    encoding.writeVarUint(reference, entries.length)
    for (const [k, s] of entries) {
      encoding.writeVarString(reference, k)
      encoding.writeVarUint(reference, s)
    }
    expect(bytes).toEqual(encoding.toUint8Array(reference))
    const out = new Map<string, number>()
    decodeMessageSeqs(bytes, out)
    expect([...out]).toEqual(entries)
  })
})
