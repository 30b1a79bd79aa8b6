/**
 * The UTF-8 length of a string without encoding it: `send()` checks every text against the
 * size limit, and `new TextEncoder().encode(text)` made an encoder and a byte array per message
 * only to read their length.
 */

/**
 * Bytes `new TextEncoder().encode(s)` would produce: a lone surrogate counts as U+FFFD (3 bytes),
 * as the encoder replaces it.
 *
 * @example utf8Length('héllo 👋') // 11
 */
export function utf8Length(s: string): number {
  let n = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x80) n += 1
    else if (c < 0x800) n += 2
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4
        i++
      } else n += 3
    } else n += 3
  }
  return n
}
