/**
 * Message ids, and the hybrid clock they carry. See messageIdFor for the layout and why.
 */
import { randomBytes, toBase64Url } from '../shared/crypto/index.js'

/** Base-36 digits of the clock in a message id: ids sort by clock while it fits them. */
const ID_CLOCK_DIGITS = 9

/**
 * A new message's id: `userId • "." • base36(hlc, 9 digits) • base64url(6 random bytes)`. The
 * hybrid clock rises with every send of a conversation, so this device's ids for it sort (byte
 * order) in send order: its outbox rows (keyed by an envelope's first message id) land at the
 * end of SQLite's key index instead of anywhere in it. Random ids scattered those writes over
 * the whole B-tree: at 10,000 sends a second, when the outbox still wrote a row per message,
 * the sender's writer thread spent 1.3 s of CPU in a 4-second run, 0.7 s with these ids. The clock
 * is in the message already (`h`), so the id tells nobody more; 48 random bits keep two devices
 * of one person apart within one millisecond.
 *
 * @example messageIdFor('u1', 1764400000000) // 'u1.0mijy7d34' + 8 random base64url characters
 */
export function messageIdFor(userId: string, hlc: number): string {
  return `${userId}.${hlc.toString(36).padStart(ID_CLOCK_DIGITS, '0')}${toBase64Url(randomBytes(6))}`
}

/**
 * A hybrid clock this device may take over from a received message: a whole number of
 * milliseconds that fits the 9 base-36 digits of a message id (until the year 5138). Any other
 * value another member wrote would give this device's ids another shape and order.
 */
export const isClock = (h: unknown): h is number => Number.isSafeInteger(h) && (h as number) >= 0 && (h as number) < 36 ** ID_CLOCK_DIGITS
