/**
 * Fan-out between relay nodes that share one store. The bus is a doorbell, the store is the
 * truth: a node that misses a message (restart, Redis blip) loses nothing, because rows are
 * always read from the store in sequence order, and `onReconnect` makes it re-read every room
 * it serves. Every implementation passes test/unit/fanout-bus.conformance.ts.
 *
 * ```
 * busMessage := uint8 1 • varUint kind • varString room • varString node • body
 * rows     (kind 1) body := varUint seq                 rows up to `seq` are durable
 * receipts (kind 2) body := receiptEntry (see room-messages.ts)
 * records  (kind 3) body := (empty)                     membership records changed
 * member   (kind 4) body := varString device             `device` became a member of `room`
 * awareness(kind 5) body := varUint8Array message        a live peer's awareness (typing) room message, as it came; never stored
 * ```
 * A node of before kind 5 drops it as undecodable (typing then stays within each node).
 */
import * as encoding from 'lib0/encoding'
import type { ReceiptEntry } from '../../shared/room-messages.js'
import { StrictReader } from '../../shared/wire.js'

export type BusMessage =
  | { kind: 'rows'; room: string; node: string; seq: number }
  | { kind: 'receipts'; room: string; node: string; entry: ReceiptEntry }
  | { kind: 'records'; room: string; node: string }
  | { kind: 'member'; room: string; node: string; device: string }
  | { kind: 'awareness'; room: string; node: string; message: Uint8Array }

export interface FanoutBus {
  publish(message: BusMessage): Promise<void>
  /** One handler per node; messages this node published are not delivered back to it. */
  subscribe(handler: (message: BusMessage) => void): void
  /** Called after the bus reconnected: messages may have been missed meanwhile. */
  onReconnect(handler: () => void): void
  /** True while the bus can deliver (for /readyz). */
  ready(): boolean
  close(): Promise<void>
}

/** Larger than any awareness message a relay forwards (its frame limit bounds them, 1 MiB by default). */
const MAX_AWARENESS_BYTES = 16 << 20

const KIND = { rows: 1, receipts: 2, records: 3, member: 4, awareness: 5 } as const

export function encodeBusMessage(m: BusMessage): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeUint8(e, 1)
  encoding.writeVarUint(e, KIND[m.kind])
  encoding.writeVarString(e, m.room)
  encoding.writeVarString(e, m.node)
  if (m.kind === 'rows') encoding.writeVarUint(e, m.seq)
  if (m.kind === 'member') encoding.writeVarString(e, m.device)
  if (m.kind === 'awareness') encoding.writeVarUint8Array(e, m.message)
  if (m.kind === 'receipts') {
    encoding.writeVarString(e, m.entry.device)
    encoding.writeVarUint(e, m.entry.stored)
    encoding.writeVarUint(e, m.entry.read)
    encoding.writeVarUint(e, m.entry.storedAt)
    encoding.writeVarUint(e, m.entry.readAt)
  }
  return encoding.toUint8Array(e)
}

export function decodeBusMessage(bytes: Uint8Array): BusMessage {
  const r = new StrictReader(bytes)
  r.uint8()
  const kind = r.varUint(5)
  const room = r.varString(64)
  const node = r.varString(128)
  if (kind === KIND.rows) return { kind: 'rows', room, node, seq: r.varUint() }
  if (kind === KIND.receipts) {
    return {
      kind: 'receipts',
      room,
      node,
      entry: { device: r.varString(64), stored: r.varUint(), read: r.varUint(), storedAt: r.varUint(), readAt: r.varUint() },
    }
  }
  if (kind === KIND.member) return { kind: 'member', room, node, device: r.varString(64) }
  if (kind === KIND.awareness) return { kind: 'awareness', room, node, message: r.varBytes(MAX_AWARENESS_BYTES) }
  return { kind: 'records', room, node }
}
