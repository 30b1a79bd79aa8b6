import * as encoding from 'lib0/encoding'
import { describe, expect, it } from 'vitest'
import { decodeMessageSeqs, decodeSentEnvelope, encodeMessageSeqs, encodeSentEnvelope } from '../../src/client/conversation-record.js'
import { PetrelError } from '../../src/shared/errors.js'

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

describe('outbox rows (sent format 1: one row per envelope)', () => {
  const user = 'U'.repeat(43)

  it('writes the messages’ common prefix once, byte for byte as the grammar says', () => {
    const row = { envelopeKey: 'k3x.1a', seq: 300, failure: '', refused: false, msgIds: [`${user}.000001abc`, `${user}.000001abd`, `${user}.00000200z`] }
    const bytes = encodeSentEnvelope(row)
    const reference = encoding.createEncoder()
    encoding.writeUint8(reference, 1)
    encoding.writeVarString(reference, 'k3x.1a')
    encoding.writeVarUint(reference, 300)
    encoding.writeVarString(reference, '')
    encoding.writeUint8(reference, 0)
    encoding.writeVarString(reference, `${user}.00000`)
    encoding.writeVarUint(reference, 3)
    for (const suffix of ['1abc', '1abd', '200z']) encoding.writeVarString(reference, suffix)
    expect(bytes).toEqual(encoding.toUint8Array(reference))
    expect(decodeSentEnvelope(bytes)).toEqual(row)
  })

  it('round-trips one message, messages with nothing in common, a failure and any text', () => {
    for (const row of [
      { envelopeKey: 'a.0', seq: 0, failure: 'too large: 2 MB', refused: true, msgIds: [`${user}.x`] },
      { envelopeKey: 'b.7', seq: 2 ** 40, failure: '', refused: false, msgIds: ['a', 'b', 'ünï.✓', ''] },
      { envelopeKey: 'c.1', seq: 1, failure: '', refused: false, msgIds: [`${user}.same`, `${user}.same`] },
      // Ids that share half of a surrogate pair: the prefix stops before it.
      { envelopeKey: 'd.2', seq: 3, failure: '', refused: false, msgIds: ['x\u{1F600}', 'x\u{1F601}'] },
    ]) {
      expect(decodeSentEnvelope(encodeSentEnvelope(row))).toEqual(row)
    }
  })

  it('refuses an unknown version and a truncated row with a typed error', () => {
    const bytes = encodeSentEnvelope({ envelopeKey: 'a.0', seq: 5, failure: '', msgIds: [`${user}.1`, `${user}.2`] })
    expect(() => decodeSentEnvelope(Uint8Array.of(2, ...bytes.subarray(1)))).toThrow(PetrelError)
    // The refused flag is 0 or 1 (it follows the version, 'a.0', seq 5 and the empty failure).
    const flag = 1 + 4 + 1 + 1
    expect(bytes[flag]).toBe(0)
    expect(() => decodeSentEnvelope(Uint8Array.from(bytes, (b, i) => (i === flag ? 2 : b)))).toThrow(PetrelError)
    for (let n = 0; n < bytes.length; n++) expect(() => decodeSentEnvelope(bytes.subarray(0, n))).toThrow(PetrelError)
  })
})
