import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { utf8Length } from '../../src/shared/utf8-length.js'

const encoded = (s: string) => new TextEncoder().encode(s).length

describe('utf8Length', () => {
  it('counts what TextEncoder writes: ASCII, two- and three-byte characters, pairs, lone surrogates', () => {
    for (const s of ['', 'hello', 'héllo', '€', '👋', 'a👋b', '\ud83d', '\udc4b', '\ud83d\ud83d', 'x\udc4b\ud83d', '\u07ff\u0800\uffff']) {
      expect(utf8Length(s)).toBe(encoded(s))
    }
  })

  it('agrees with TextEncoder on any string of UTF-16 code units', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (s) => utf8Length(s) === encoded(s)),
      { numRuns: 2000 },
    )
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 100 }), (units) => {
        const s = String.fromCharCode(...units)
        return utf8Length(s) === encoded(s)
      }),
      { numRuns: 2000 },
    )
  })
})
