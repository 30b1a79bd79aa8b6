/**
 * Reading a byte stream of untrusted length: an upload to the relay, a snapshot being inflated.
 */
import { concatBytes } from './crypto/hash.js'

/**
 * Reads a stream of at most `max` bytes, stopping (and cancelling it) as soon as it is larger,
 * so an oversized or endless stream costs at most `max` bytes of memory.
 *
 * @example const bytes = await readCapped(request.body, 64 * 1024) // Uint8Array, or 'too-large'
 */
export async function readCapped(body: ReadableStream<Uint8Array> | null, max: number): Promise<Uint8Array | 'too-large'> {
  if (!body) return new Uint8Array()
  const reader = body.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > max) {
      await reader.cancel().catch(() => undefined)
      return 'too-large'
    }
    chunks.push(value)
  }
  return chunks.length === 1 ? chunks[0]! : concatBytes(...chunks)
}
