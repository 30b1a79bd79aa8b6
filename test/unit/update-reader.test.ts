import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { applyUpdate } from '../../src/shared/update-reader.js'
import { readAny, readVarString } from '../../src/shared/var-string.js'
import { anyValues, chatDoc, dependentUpdates, everyContentDoc, expectSameBytes } from '../fixtures/yjs-docs.js'

/** What a read returns or throws, and where the decoder stands after it. */
function outcome(read: (d: decoding.Decoder) => unknown, bytes: Uint8Array): { value?: unknown; threw?: string; pos: number } {
  const d = decoding.createDecoder(bytes)
  try {
    return { value: read(d), pos: d.pos }
  } catch (err) {
    return { threw: (err as Error).constructor.name, pos: d.pos }
  }
}

const bytesOf = (write: (e: encoding.Encoder) => void): Uint8Array => {
  const e = encoding.createEncoder()
  write(e)
  return encoding.toUint8Array(e)
}

/** A document's content, for comparing two documents. */
const contentOf = (doc: Y.Doc) => ({ messages: doc.getMap('messages').toJSON(), text: doc.getText('text').toDelta(), any: doc.getArray('any').toJSON(), xml: doc.getXmlFragment('xml').toString() })

describe('readVarString', () => {
  it("reads lib0's values at the loop's length boundary, in every script, and stops where lib0 stops", () => {
    const strings = ['', 'a', 'at', 'x'.repeat(12), 'x'.repeat(13), `${'x'.repeat(11)}é`, 'é', '\ufeffbom', '€😀', 'x'.repeat(200), 'ü'.repeat(5000)]
    for (const s of strings) {
      const bytes = bytesOf((e) => {
        encoding.writeVarString(e, s)
        encoding.writeUint8(e, 7)
      })
      const ours = outcome(readVarString, bytes)
      expect(ours, `${s.length} units`).toEqual(outcome(decoding.readVarString, bytes))
      expect(ours.value).toBe(s)
    }
  })

  it('fails as lib0 fails on bytes that are not UTF-8 or end early', () => {
    const broken = [
      Uint8Array.of(2, 0xc3, 0x28), // invalid UTF-8, short
      Uint8Array.of(3, 0x61, 0xff, 0x62), // a byte UTF-8 never has, after ASCII
      Uint8Array.of(5, 0x61, 0x62), // a short string that ends early
      Uint8Array.of(0x85), // a length that ends early
    ]
    for (const bytes of broken) {
      const lib0 = outcome(decoding.readVarString, bytes)
      expect(outcome(readVarString, bytes)).toEqual(lib0)
    }
    expect(outcome(readVarString, Uint8Array.of(2, 0xc3, 0x28)).threw).toBe('TypeError')
  })
})

describe('readAny', () => {
  it("reads lib0's values of every kind, nested ones too", () => {
    for (const value of anyValues) {
      const bytes = bytesOf((e) => encoding.writeAny(e, value as Parameters<typeof encoding.writeAny>[1]))
      const ours = outcome(readAny, bytes)
      expect(ours, String(value)).toEqual(outcome(decoding.readAny, bytes))
    }
  })

  it('fails as lib0 fails on an unknown tag or a value that ends early', () => {
    for (const bytes of [Uint8Array.of(115), Uint8Array.of(118, 2, 1, 0x61, 119), Uint8Array.of(117, 3, 125), Uint8Array.of()]) {
      expect(outcome(readAny, bytes)).toEqual(outcome(decoding.readAny, bytes))
    }
  })
})

describe('applyUpdate', () => {
  it('builds the document Y.applyUpdate builds from a conversation, whole or update by update', () => {
    const source = chatDoc(1_000)
    const updates: Uint8Array[] = []
    const live = new Y.Doc()
    live.on('update', (u: Uint8Array) => updates.push(u))
    Y.applyUpdate(live, Y.encodeStateAsUpdate(source))
    live.getMap('messages').set('one more', { t: 'ünïcode', n: 1 })
    const state = Y.encodeStateAsUpdate(live)
    const ours = new Y.Doc()
    const theirs = new Y.Doc()
    applyUpdate(ours, state, 'load')
    Y.applyUpdate(theirs, state, 'load')
    expect(contentOf(ours)).toEqual(contentOf(theirs))
    expectSameBytes(Y.encodeStateAsUpdate(ours), Y.encodeStateAsUpdate(theirs))
    const stepwise = new Y.Doc()
    for (const u of [state.slice(), ...updates]) applyUpdate(stepwise, u)
    expect(contentOf(stepwise)).toEqual(contentOf(theirs))
  })

  it('reads text, formats, embeds, XML, subdocuments and values of every kind as Yjs does, with the origin given', () => {
    const state = Y.encodeStateAsUpdate(everyContentDoc())
    const ours = new Y.Doc()
    const origins: unknown[] = []
    ours.on('update', (_u: Uint8Array, origin: unknown) => origins.push(origin))
    applyUpdate(ours, state, 'remote')
    const theirs = new Y.Doc()
    Y.applyUpdate(theirs, state)
    expect(contentOf(ours)).toEqual(contentOf(theirs))
    expectSameBytes(Y.encodeStateAsUpdate(ours), Y.encodeStateAsUpdate(theirs))
    expect(origins).toEqual(['remote'])
  })

  it('holds an update that comes before the history it builds on, and applies it once that comes', () => {
    const [first, second] = dependentUpdates()
    const doc = new Y.Doc()
    applyUpdate(doc, second)
    expect(doc.getArray('list').toArray()).toEqual([])
    applyUpdate(doc, first)
    expect(doc.getArray('list').toArray()).toEqual(['first', 'second, after the first'])
  })

  it('fails as Y.applyUpdate fails on bytes that are no update', () => {
    const valid = Y.encodeStateAsUpdate(chatDoc(20))
    for (const bytes of [Uint8Array.of(1, 1, 5), valid.subarray(0, valid.length >> 1), Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff)]) {
      const attempt = (apply: (d: Y.Doc, u: Uint8Array) => void) => {
        try {
          apply(new Y.Doc(), bytes)
          return 'applied'
        } catch (err) {
          return (err as Error).constructor.name
        }
      }
      expect(attempt(applyUpdate)).toBe(attempt(Y.applyUpdate))
    }
  })
})
