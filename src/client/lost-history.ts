/**
 * History a device will never hold, made to stop blocking what follows it.
 *
 * Yjs integrates a client's changes only in clock order, and an item only once the item it
 * was written next to (its origin) is there. A device that holds part of the history only (a
 * 'from-join' member's, or its device linked later, which gets the older part compacted into
 * a snapshot it cannot open) lacks the start of every client that wrote before it came. The
 * writers move to a fresh client id once they fold the new member or device, but a change
 * written before that — sent at the same moment, or from an outbox filled offline — still
 * continues an old client: at this device it would wait in Yjs for good, and every later change
 * of that client with it.
 *
 * The filler marks the start of such a client as garbage-collected (a GC struct: no content,
 * no origin, no parent): a client this device holds nothing of, whose own changes wait from
 * clock c > 0, gets its clocks [0, c) filled, and what waits goes in. Those clocks precede, in
 * relay order, what this device received of that client, so they are either here, held back
 * (the caller fills only when nothing held back could still open) or beyond its reach.
 *
 * Not filled: an item that waits on a REFERENCE into such a client (a map entry overwritten
 * after an entry of unreadable history). Filling the named client up to the named clock would
 * let a member who names a clock far ahead in another member's client erase what that member
 * writes later; such an item keeps waiting, with its client's later changes, as before.
 *
 * ```
 * filler := V1 update, one per client: varUint 1 (groups) • varUint 1 (structs) • varUint client
 *           • varUint 0 (first clock) • uint8 0 (GC) • varUint c (length) • varUint 0 (no deletes)
 * ```
 */
import * as encoding from 'lib0/encoding'
import * as Y from 'yjs'
import { buildUpdate, parseUpdate } from '../shared/yjs-v1.js'

/** V1 updates filling the unreadable start of every client that holds changes back, if any. */
export function lostClocksFiller(doc: Y.Doc): Uint8Array[] {
  const pending = doc.store.pendingStructs
  if (!pending) return []
  const parsed = parseUpdate(Y.convertUpdateFormatV2ToV1(pending.update), {
    maxBytes: Infinity,
    maxStructs: Infinity,
    maxDeleteRanges: Infinity,
  })
  const fills: Uint8Array[] = []
  for (const g of parsed.groups) {
    const first = g.structs.find((s) => s.kind !== 'skip')
    if (!first || first.clock === 0 || Y.getState(doc.store, g.client) !== 0) continue
    const e = encoding.createEncoder()
    encoding.writeUint8(e, 0)
    encoding.writeVarUint(e, first.clock)
    fills.push(buildUpdate([{ client: g.client, startClock: 0, count: 1, bytes: encoding.toUint8Array(e) }]))
  }
  return fills
}
