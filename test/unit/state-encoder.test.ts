import * as encoding from 'lib0/encoding'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { encodeState, stateEncoderFor } from '../../src/shared/state-encoder.js'
import { lib0StringWriters, writeAny } from '../../src/shared/var-string.js'
import { anyValues, chatDoc, dependentUpdates, everyContentDoc, expectSameBytes, listValues, mapValues } from '../fixtures/yjs-docs.js'

describe('encodeState', () => {
  it("writes exactly Y.encodeStateAsUpdate's bytes of a conversation, deletions and several client ids too", () => {
    const doc = chatDoc(1_000)
    expectSameBytes(encodeState(doc), Y.encodeStateAsUpdate(doc))
  })

  it('writes the same bytes for text, formats, embeds, XML, subdocuments and every kind of value', () => {
    const doc = everyContentDoc()
    const ours = encodeState(doc)
    expectSameBytes(ours, Y.encodeStateAsUpdate(doc))
    // And what it wrote reads back as the document (a lone surrogate as U+FFFD, as UTF-8 has it).
    const back = new Y.Doc()
    Y.applyUpdate(back, ours)
    expect(back.getText('text').toDelta()).toEqual(doc.getText('text').toDelta())
    // (In a /u pattern \p{Cs} matches only a surrogate that is not half of a pair.)
    const utf8 = (v: unknown) => (typeof v === 'string' ? v.replace(/\p{Cs}/gu, '\ufffd') : v)
    expect(back.getArray('any').toJSON()).toEqual(doc.getArray('any').toJSON().map(utf8))
  })

  it('writes only what a state vector lacks, as Yjs does', () => {
    const doc = chatDoc(300)
    const earlier = Y.encodeStateVector(doc)
    doc.getMap('messages').set('late', { t: 'later, ünïcode', n: 1 })
    expectSameBytes(encodeState(doc, earlier), Y.encodeStateAsUpdate(doc, earlier))
  })

  it('leaves a document with updates waiting for missing history to Yjs, which merges them in', () => {
    const [first, second] = dependentUpdates()
    const doc = new Y.Doc()
    Y.applyUpdate(doc, second)
    expect(doc.store.pendingStructs).not.toBeNull()
    const ours = encodeState(doc)
    expectSameBytes(ours, Y.encodeStateAsUpdate(doc))
    // The waiting update is in it: with the first, the list is whole.
    const back = new Y.Doc()
    Y.applyUpdate(back, ours)
    Y.applyUpdate(back, first)
    expect(back.getArray('list').toArray()).toEqual(['first', 'second, after the first'])
  })

  it('agrees with Yjs on 100 documents of random edits', () => {
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!
    for (let n = 0; n < 100; n++) {
      const doc = new Y.Doc()
      const map = doc.getMap<unknown>('m')
      const arr = doc.getArray<unknown>('a')
      const text = doc.getText('t')
      for (let op = 0; op < 40; op++) {
        const r = Math.random()
        if (r < 0.4) map.set(pick(['a', 'bé', 'x'.repeat(45), '😀']), pick(mapValues))
        else if (r < 0.6) arr.insert(Math.floor(Math.random() * (arr.length + 1)), [pick(listValues)])
        else if (r < 0.8) text.insert(Math.floor(Math.random() * (text.length + 1)), pick(['a', 'ü€', 'x'.repeat(50)]))
        else if (r < 0.9 && arr.length > 0) arr.delete(0, 1)
        else doc.clientID = Math.floor(Math.random() * 2 ** 31)
      }
      expectSameBytes(encodeState(doc), Y.encodeStateAsUpdate(doc))
    }
  })

  it('fails the comparison when a writer writes other bytes (the tests above can fail)', () => {
    const writers = lib0StringWriters(encoding)
    const { encode: wrong } = stateEncoderFor(Y, { writeVarString: writers.writeVarString, writeAny: (e, v) => encoding.writeAny(e, (typeof v === 'string' ? v.toUpperCase() : v) as Parameters<typeof encoding.writeAny>[1]) })
    const doc = new Y.Doc()
    doc.getMap('m').set('k', 'lower')
    expect(() => expectSameBytes(wrong(doc), Y.encodeStateAsUpdate(doc))).toThrow(/bytes differ from offset/)
  })
})

describe('encodeInPlace', () => {
  it("writes Yjs's bytes into the buffer it keeps, growing it for a bigger document, one encoding after another", () => {
    const { encodeInPlace } = stateEncoderFor(Y, lib0StringWriters(encoding))
    const small = chatDoc(50)
    const big = chatDoc(3_000)
    // The first big one does not fit the first buffer (64 KiB); the next ones do.
    for (const doc of [small, big, big, small, big]) {
      const state = encodeInPlace(doc)
      expectSameBytes(state, Y.encodeStateAsUpdate(doc))
    }
  })

  it('hands out a view that the next encoding writes over (the caller reads it first)', () => {
    const { encodeInPlace } = stateEncoderFor(Y, lib0StringWriters(encoding))
    const a = chatDoc(100)
    const b = new Y.Doc()
    b.getMap('messages').set('other', { t: 'another conversation' })
    encodeInPlace(a)
    const first = encodeInPlace(a)
    const copied = first.slice()
    encodeInPlace(b)
    expect(first.buffer).toBe(encodeInPlace(a).buffer)
    expectSameBytes(copied, Y.encodeStateAsUpdate(a))
  })

  it('leaves a document with updates waiting for missing history to Yjs', () => {
    const doc = new Y.Doc()
    Y.applyUpdate(doc, dependentUpdates()[1])
    const { encodeInPlace } = stateEncoderFor(Y, lib0StringWriters(encoding))
    expectSameBytes(encodeInPlace(doc), Y.encodeStateAsUpdate(doc))
  })
})

describe('writeAny', () => {
  it("writes lib0's bytes for every kind of value", () => {
    for (const value of anyValues) {
      const lib0 = encoding.createEncoder()
      const ours = encoding.createEncoder()
      encoding.writeAny(lib0, value as Parameters<typeof encoding.writeAny>[1])
      writeAny(ours, value)
      expect(encoding.toUint8Array(ours), String(value)).toEqual(encoding.toUint8Array(lib0))
    }
  })
})
