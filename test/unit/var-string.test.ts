import * as encoding from 'lib0/encoding'
import { describe, expect, it } from 'vitest'
import { writeVarString } from '../../src/shared/var-string.js'

/** The bytes of `prefix` bytes of filler and then `s`, by lib0 and by ours. */
function both(s: string, prefix = 0): [Uint8Array, Uint8Array] {
  const write = (w: (e: encoding.Encoder, s: string) => void) => {
    const e = encoding.createEncoder()
    for (let i = 0; i < prefix; i++) encoding.writeUint8(e, i & 0xff)
    w(e, s)
    encoding.writeUint8(e, 0xee)
    return encoding.toUint8Array(e)
  }
  return [write(encoding.writeVarString), write(writeVarString)]
}

function randomString(units: number): string {
  const pools = [
    () => 0x20 + Math.floor(Math.random() * 0x5f),
    () => 0x80 + Math.floor(Math.random() * 0x780),
    () => 0x800 + Math.floor(Math.random() * 0xd000),
    () => 0xd800 + Math.floor(Math.random() * 0x800), // lone or paired surrogates
  ]
  let s = ''
  for (let i = 0; i < units; i++) s += String.fromCharCode(pools[Math.floor(Math.random() * pools.length)]!())
  return s
}

describe('writeVarString', () => {
  it("writes lib0's bytes for the length boundaries, every script and broken surrogates", () => {
    const cases = [
      '',
      'a',
      'x'.repeat(39),
      'x'.repeat(40),
      `${'x'.repeat(38)}é`,
      `é${'x'.repeat(38)}`,
      'x'.repeat(42),
      'x'.repeat(43),
      'x'.repeat(127),
      'x'.repeat(128),
      'é'.repeat(63),
      'é'.repeat(64),
      '€'.repeat(42),
      '€'.repeat(43),
      '😀'.repeat(32),
      '\ud800',
      'a\udc00b',
      'x'.repeat(5461),
      'x'.repeat(5462),
      '€'.repeat(5461),
      'x'.repeat(40_000),
    ]
    for (const s of cases) {
      const [lib0, ours] = both(s)
      expect(ours, `${s.length} units`).toEqual(lib0)
    }
  })

  it('writes the same bytes across a buffer boundary of the encoder', () => {
    // createEncoder starts with 100 bytes: strings that end past it grow the buffer mid-write.
    for (let prefix = 80; prefix < 110; prefix++) {
      for (const s of ['x'.repeat(30), '€'.repeat(20), randomString(50)]) {
        const [lib0, ours] = both(s, prefix)
        expect(ours).toEqual(lib0)
      }
    }
  })

  it('agrees with lib0 on 2,000 random strings', () => {
    for (let i = 0; i < 2000; i++) {
      const s = randomString(Math.floor(Math.random() * (i % 10 === 0 ? 6000 : 200)))
      const [lib0, ours] = both(s, i % 120)
      expect(ours).toEqual(lib0)
    }
  })
})
