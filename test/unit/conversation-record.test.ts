import * as encoding from 'lib0/encoding'
import { describe, expect, it } from 'vitest'
import {
  decodeConversationRecord,
  decodeDeferred,
  decodeLostKeys,
  decodeMessageSeqs,
  decodeSentEnvelope,
  decodeWriterIds,
  encodeConversationRecord,
  encodeDeferred,
  encodeLostKeys,
  encodeMessageSeqs,
  encodeSentEnvelope,
  encodeWriterIds,
} from '../../src/client/conversation-record.js'
import { PetrelError } from '../../src/shared/errors.js'

describe('message positions (mseqs)', () => {
  const user = 'A'.repeat(43)
  const entries: Array<[string, number]> = [
    [`${user}.abc_-`, 1],
    [`${user}.abd`, 2],
    ['', 3],
    ['x'.repeat(300), 2 ** 40],
    ['ünïcødé.✓', 5],
    // Sharing the first half of a surrogate pair only: the shared part stops before it.
    ['ünï\u{1F600}', 6],
    ['ünï\u{1F601}z', 7],
  ]

  it('writes each key as what it shares with the one before and the rest, byte for byte as the grammar says', () => {
    // All ASCII (the fast path), and with other text among them (the general one).
    // Authors interleaved, a key that is only an author's id and its dot, keys without a dot.
    const other = 'B'.repeat(43)
    const interleaved: Array<[string, number]> = [
      [`${user}.abc`, 1],
      [`${user}.abc9`, 2],
      [`${other}.abc`, 3],
      [`${user}.`, 4],
      [`${user}.abd`, 5],
      [`${user}`, 6],
      ['no-dot-key', 7],
      ['no-dot-kez', 8],
      [`${other}.a`, 9],
    ]
    for (const list of [entries.slice(0, 4), entries, interleaved]) {
      const bytes = encodeMessageSeqs(list)
      const reference = encoding.createEncoder()
      encoding.writeUint8(reference, 2)
      encoding.writeVarUint(reference, list.length)
      let previous = ''
      for (const [k, seq] of list) {
        let n = 0
        while (n < previous.length && n < k.length && previous[n] === k[n]) n++
        if (n > 0 && /[\uD800-\uDBFF]/.test(k[n - 1]!)) n--
        encoding.writeVarUint(reference, n)
        encoding.writeVarString(reference, k.slice(n))
        encoding.writeVarUint(reference, seq)
        previous = k
      }
      expect(bytes).toEqual(encoding.toUint8Array(reference))
      const out = new Map<string, number>()
      decodeMessageSeqs(bytes, out)
      expect([...out]).toEqual(list)
    }
    // The author's id is written once, not per message.
    const batch = Array.from({ length: 100 }, (_, i): [string, number] => [`${user}.0mijy7d3${i.toString(36).padStart(2, '0')}abcdefgh`, 1000 + i])
    expect(encodeMessageSeqs(batch).length).toBeLessThan(100 * 20)
  })

  it('still reads format 1, one whole key per entry', () => {
    const reference = encoding.createEncoder()
    encoding.writeUint8(reference, 1)
    encoding.writeVarUint(reference, entries.length)
    for (const [k, seq] of entries) {
      encoding.writeVarString(reference, k)
      encoding.writeVarUint(reference, seq)
    }
    const out = new Map<string, number>()
    decodeMessageSeqs(encoding.toUint8Array(reference), out)
    expect([...out]).toEqual(entries)
  })

  it('refuses an unknown version, a key sharing more than the one before, and a truncated row', () => {
    const bytes = encodeMessageSeqs(entries.slice(0, 2))
    expect(() => decodeMessageSeqs(Uint8Array.of(3, ...bytes.subarray(1)), new Map())).toThrow(PetrelError)
    expect(() => decodeMessageSeqs(Uint8Array.of(2, 1, 5, 1, 0x61, 1), new Map())).toThrow(PetrelError)
    for (let n = 0; n < bytes.length; n++) expect(() => decodeMessageSeqs(bytes.subarray(0, n), new Map())).toThrow(PetrelError)
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
    expect(() => decodeSentEnvelope(Uint8Array.of(3, ...bytes.subarray(1)))).toThrow(PetrelError)
    // The outcome is 0 or 1 in format 1, up to 2 in format 2 (it follows the version, 'a.0',
    // seq 5 and the empty failure).
    const flag = 1 + 4 + 1 + 1
    expect(bytes[flag]).toBe(0)
    const withOutcome = (version: number, outcome: number) => Uint8Array.from(bytes, (b, i) => (i === 0 ? version : i === flag ? outcome : b))
    expect(() => decodeSentEnvelope(withOutcome(1, 2))).toThrow(PetrelError)
    expect(() => decodeSentEnvelope(withOutcome(2, 3))).toThrow(PetrelError)
    expect(decodeSentEnvelope(withOutcome(2, 2)).stale).toBe(true)
    for (let n = 0; n < bytes.length; n++) expect(() => decodeSentEnvelope(bytes.subarray(0, n))).toThrow(PetrelError)
  })

  it('writes a stale refusal as format 2, and everything else still as format 1', () => {
    const stale = { envelopeKey: 'a.0', seq: 0, failure: '', refused: false, stale: true, msgIds: [`${user}.1`] }
    const bytes = encodeSentEnvelope(stale)
    expect(bytes[0]).toBe(2)
    expect(decodeSentEnvelope(bytes)).toEqual(stale)
    expect(encodeSentEnvelope({ ...stale, stale: false })[0]).toBe(1)
    // Refused for good wins: a message refused so is not sealed again.
    const refused = decodeSentEnvelope(encodeSentEnvelope({ ...stale, refused: true }))
    expect([refused.refused, refused.stale ?? false]).toEqual([true, false])
  })
})

describe('conversation record', () => {
  it('round-trips, and refuses a key of another length, an unknown version and a truncated record with typed errors', () => {
    const record = { createdAt: 5, admission: Uint8Array.of(1, 2), keys: new Map([[0, new Uint8Array(32).fill(7)], [3, new Uint8Array(32).fill(9)]]) }
    const bytes = encodeConversationRecord(record)
    expect(decodeConversationRecord(bytes)).toEqual(record)
    expect(() => decodeConversationRecord(encodeConversationRecord({ ...record, keys: new Map([[1, new Uint8Array(31)]]) }))).toThrow(/epoch 1 has 31 bytes/)
    expect(() => decodeConversationRecord(Uint8Array.of(2, ...bytes.subarray(1)))).toThrow(PetrelError)
    for (let n = 0; n < bytes.length; n++) expect(() => decodeConversationRecord(bytes.subarray(0, n))).toThrow(PetrelError)
  })
})

describe('lost keys', () => {
  it('round-trip, and refuse a key of another length, an unknown version and a truncated row', () => {
    const keys = [new Uint8Array(32).fill(1), new Uint8Array(32).fill(2)]
    const bytes = encodeLostKeys(keys)
    expect(decodeLostKeys(bytes)).toEqual(keys)
    expect(decodeLostKeys(encodeLostKeys([]))).toEqual([])
    expect(() => decodeLostKeys(encodeLostKeys([new Uint8Array(31)]))).toThrow(PetrelError)
    expect(() => decodeLostKeys(Uint8Array.of(2, ...bytes.subarray(1)))).toThrow(PetrelError)
    for (let n = 0; n < bytes.length; n++) expect(() => decodeLostKeys(bytes.subarray(0, n))).toThrow(PetrelError)
  })
})

describe('held envelopes (defer format 2)', () => {
  it('keeps whether each came in a row uploaded as a snapshot part', () => {
    const entries: Array<[string, number, boolean]> = [
      ['abc.0', 7, false],
      ['abc.1', 8, true],
    ]
    expect(decodeDeferred(encodeDeferred(entries))).toEqual(entries)
  })
  it('reads format 1 (no mark) as unmarked, and refuses a mark other than 0 or 1', () => {
    const e = encoding.createEncoder()
    encoding.writeUint8(e, 1)
    encoding.writeVarUint(e, 1)
    encoding.writeVarString(e, 'abc.0')
    encoding.writeVarUint(e, 7)
    expect(decodeDeferred(encoding.toUint8Array(e))).toEqual([['abc.0', 7, false]])
    const bad = encodeDeferred([['abc.0', 7, true]])
    bad[bad.length - 1] = 2
    expect(() => decodeDeferred(bad)).toThrow(PetrelError)
  })
})

describe('writer ids (the client ids a clean close leaves to the next session)', () => {
  const ids = { innerClient: 0xffff_ffff, innerClock: 1_234_567, outerClient: 7, outerClock: 0, clientEpoch: 3, epoch: 18, devices: 4, awarenessClock: 12 }

  it('writes a version byte and eight varUints, in the grammar’s order, and round-trips', () => {
    const bytes = encodeWriterIds(ids)
    const e = encoding.createEncoder()
    encoding.writeUint8(e, 1)
    for (const n of [0xffff_ffff, 1_234_567, 7, 0, 3, 18, 4, 12]) encoding.writeVarUint(e, n)
    expect(bytes).toEqual(encoding.toUint8Array(e))
    expect(decodeWriterIds(bytes)).toEqual(ids)
  })

  it('refuses an unknown version, a client id past 32 bits, a truncated row and trailing bytes with a typed error', () => {
    const bytes = encodeWriterIds(ids)
    const past = encodeWriterIds({ ...ids, innerClient: 2 ** 32 })
    for (const bad of [Uint8Array.of(2, ...bytes.subarray(1)), past, bytes.subarray(0, bytes.length - 1), Uint8Array.of(...bytes, 0)]) {
      expect(() => decodeWriterIds(bad)).toThrow(PetrelError)
    }
  })
})
