/**
 * Yjs client ids as Petrel uses them: uint32, as Yjs draws them, in every document and on the
 * wire (room messages carry them as such).
 */
import { randomBytes } from './crypto/index.js'

/** The largest Yjs client id. */
export const MAX_CLIENT_ID = 0xffffffff

/**
 * A fresh Yjs client id (uint32), as Yjs makes them.
 *
 * @example doc.clientID = randomClientId()
 */
export function randomClientId(): number {
  const b = randomBytes(4)
  return new DataView(b.buffer, b.byteOffset, 4).getUint32(0)
}
