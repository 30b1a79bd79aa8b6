import * as encoding from 'lib0/encoding'
import { describe, expect, it } from 'vitest'
import { StrictDecoder } from '../../src/shared/lib0-strict.js'

const strings = (...xs: Array<string | Uint8Array>) => {
  const e = encoding.createEncoder()
  for (const x of xs) {
    if (typeof x === 'string') encoding.writeVarString(e, x)
    else encoding.writeVarUint8Array(e, x)
  }
  return encoding.toUint8Array(e)
}

describe('strict decoder: repeated strings', () => {
  it('gives the same string for the same bytes and reads each new one', () => {
    const cache = { bytes: new Uint8Array(0), value: '' }
    const d = new StrictDecoder(strings('messages', 'messages', 'profiles', 'messages'))
    const a = d.readRepeatedString(64, 'root', cache)
    expect(d.readRepeatedString(64, 'root', cache)).toBe(a)
    expect(d.readRepeatedString(64, 'root', cache)).toBe('profiles')
    expect(d.readRepeatedString(64, 'root', cache)).toBe('messages')
    expect(d.remaining).toBe(0)
  })

  it('checks the limit and the UTF-8 of every string, also after a cached one', () => {
    const cache = { bytes: new Uint8Array(0), value: '' }
    const d = new StrictDecoder(strings('meta', Uint8Array.of(0xff, 0xfe)))
    expect(d.readRepeatedString(64, 'root', cache)).toBe('meta')
    expect(() => d.readRepeatedString(64, 'root', cache)).toThrow(/UTF-8/)
    const long = new StrictDecoder(strings('meta', 'x'.repeat(65)))
    expect(long.readRepeatedString(64, 'root', cache)).toBe('meta')
    expect(() => long.readRepeatedString(64, 'root', cache)).toThrow(/exceeds the limit/)
  })
})
