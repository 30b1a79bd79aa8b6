/**
 * Messages inside a `room` frame. Types 0–3 are y-websocket's own (sync, awareness, auth,
 * query-awareness) and are handled by its provider unchanged; 100+ are the relay's, added
 * to each provider's handler table.
 *
 * ```
 * ack       (R→C) := varUint 100 • varUint seq • varUint n • { varUint client • varUint clock • varUint len }{n}
 *                     the ranges were stored durably as row `seq` (✓)
 * refused   (R→C) := varUint 101 • varUint reason • varString message • varUint n • { client • clock • len }{n}
 *                     the ranges will never be stored (reason is permanent); the relay keeps the
 *                     client's clock sequence contiguous by storing GC placeholders in their place
 * cursor    (R→C) := varUint 102 • varUint seq     you now hold every row up to `seq`
 * keepalive (local) := varUint 104                 never on the wire: the client feeds it to every
 *                     room's provider when a connection heartbeat arrives, so one heartbeat keeps
 *                     every provider's watchdog quiet
 * receipts  (R→C) := varUint 103 • varUint n • { varString deviceId • varUint stored • varUint read
 *                     • varUint storedAt • varUint readAt }{n}
 *                     the latest acknowledgement of each device in the room (times in ms since epoch)
 * device-ack (C→R) := varUint 106 • varString deviceId • varUint stored • varUint read
 *                     "my copy holds every row up to `stored`, and I displayed up to `read`";
 *                     the relay accepts it only for the connection's own device
 * rows      (R→C) := varUint 105 • varUint n • { varUint seq • varUint client • varUint clock • varUint len }{n}
 *                     • varUint8Array update • [ varUint m • { varUint seq }{m} ]
 *                     stored rows, as one V1 update, with the sequence number of each (client,
 *                     clock) run: sync messages carry no sequence numbers, and a client needs
 *                     them to apply envelopes in relay order and to acknowledge receipts. The
 *                     optional list names the rows uploaded as snapshot parts (whole or as a
 *                     placeholder): a client refuses an envelope in one that opens as a message
 * snapshot-part (C→R) := varUint 107 • varUint8Array update
 *                     a sync update whose envelopes are one of this device's history snapshot
 *                     parts (with its record, on the last): stored and acknowledged like any
 *                     update; the relay sends live peers that said `want-parts 0` a GC
 *                     placeholder of the part's row instead of the part (the record's row whole)
 * want-parts (C→R) := varUint 108 • uint8 want (0, 1 or 2)
 *                     whether this device, live in the room, wants others' snapshot parts as they
 *                     are written: 1 (the default for every connection) while it still lacks
 *                     history a snapshot would give it, 0 once it holds all it has been sent.
 *                     2, sent before sync step 1 by a device that lacks no history it knows of:
 *                     its catch-ups get placeholders of part rows too, until the relay sends it
 *                     a row that is one GC struct (compacted history, or a refused write's
 *                     blank: the relay cannot tell them apart in every case, so either stops
 *                     the sparing); after a catch-up that sent none, live parts are spared as
 *                     after 0, else they come whole as after 1
 * ```
 * 107 and 108 only go to a relay that announced `RelayFeature.SnapshotParts` (wire.ts), and
 * `want-parts 2` only to one that announced `RelayFeature.CatchUpParts`.
 */
import * as encoding from 'lib0/encoding'
import { encodeSmall } from './scratch-encoder.js'
import type { StrictReader } from './wire.js'

export const RoomMessage = {
  Sync: 0,
  Awareness: 1,
  Auth: 2,
  QueryAwareness: 3,
  Ack: 100,
  Refused: 101,
  Cursor: 102,
  Receipts: 103,
  Keepalive: 104,
  Rows: 105,
  DeviceAck: 106,
  SnapshotPart: 107,
  WantParts: 108,
} as const

export interface ClockRange {
  client: number
  clock: number
  len: number
}

const writeRanges = (e: encoding.Encoder, ranges: ClockRange[]) => {
  encoding.writeVarUint(e, ranges.length)
  for (const r of ranges) {
    encoding.writeVarUint(e, r.client)
    encoding.writeVarUint(e, r.clock)
    encoding.writeVarUint(e, r.len)
  }
}

const readRanges = (r: StrictReader): ClockRange[] => {
  const n = r.varUint(r.remaining)
  const out: ClockRange[] = []
  for (let i = 0; i < n; i++) out.push({ client: r.varUint(0xffffffff), clock: r.varUint(), len: r.varUint() })
  return out
}

export function writeAck(seq: number, ranges: ClockRange[]): Uint8Array {
  return encodeSmall((e) => {
    encoding.writeVarUint(e, RoomMessage.Ack)
    encoding.writeVarUint(e, seq)
    writeRanges(e, ranges)
  })
}

export function writeRefused(reason: number, message: string, ranges: ClockRange[]): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, RoomMessage.Refused)
  encoding.writeVarUint(e, reason)
  encoding.writeVarString(e, message)
  writeRanges(e, ranges)
  return encoding.toUint8Array(e)
}

export function writeCursor(seq: number): Uint8Array {
  return encodeSmall((e) => {
    encoding.writeVarUint(e, RoomMessage.Cursor)
    encoding.writeVarUint(e, seq)
  })
}

export const KEEPALIVE_MESSAGE = Uint8Array.of(RoomMessage.Keepalive)

/** Readers take the bytes after the type varUint (y-websocket's handler already read it). */
export const readAck = (r: StrictReader) => ({ seq: r.varUint(), ranges: readRanges(r) })
export const readRefused = (r: StrictReader) => ({ reason: r.varUint(1 << 16), message: r.varString(1024), ranges: readRanges(r) })
export const readCursor = (r: StrictReader) => ({ seq: r.varUint() })

/** y-protocols sync sub-types. */
export const SyncStep = { Step1: 0, Step2: 1, Update: 2 } as const

/** `messageSync • step2 • varUint8Array(00 00)`: the empty step 2 that marks a provider synced. */
export const EMPTY_SYNC_STEP2 = Uint8Array.of(RoomMessage.Sync, SyncStep.Step2, 2, 0, 0)

export function writeSyncMessage(step: number, payload: Uint8Array): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, RoomMessage.Sync)
  encoding.writeVarUint(e, step)
  encoding.writeVarUint8Array(e, payload)
  return encoding.toUint8Array(e)
}

export interface RowIndexEntry extends ClockRange {
  seq: number
}

export function writeRows(index: RowIndexEntry[], update: Uint8Array): Uint8Array {
  return encodeSmall((e) => {
    encoding.writeVarUint(e, RoomMessage.Rows)
    encoding.writeVarUint(e, index.length)
    for (const r of index) {
      encoding.writeVarUint(e, r.seq)
      encoding.writeVarUint(e, r.client)
      encoding.writeVarUint(e, r.clock)
      encoding.writeVarUint(e, r.len)
    }
    encoding.writeVarUint8Array(e, update)
  })
}

export const readRows = (r: StrictReader) => {
  const n = r.varUint(r.remaining)
  const index: RowIndexEntry[] = []
  for (let i = 0; i < n; i++) index.push({ seq: r.varUint(), client: r.varUint(0xffffffff), clock: r.varUint(), len: r.varUint() })
  const update = r.varBytes(r.remaining)
  // Seqs of the rows uploaded as snapshot parts; absent from relays of before it. Anything after is for later versions.
  const parts: number[] = []
  if (r.remaining > 0) for (let i = 0, m = r.varUint(r.remaining); i < m; i++) parts.push(r.varUint())
  return { index, update, parts }
}

export interface ReceiptEntry {
  device: string
  stored: number
  read: number
  storedAt: number
  readAt: number
}

export function writeReceipts(entries: ReceiptEntry[]): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, RoomMessage.Receipts)
  encoding.writeVarUint(e, entries.length)
  for (const r of entries) {
    encoding.writeVarString(e, r.device)
    encoding.writeVarUint(e, r.stored)
    encoding.writeVarUint(e, r.read)
    encoding.writeVarUint(e, r.storedAt)
    encoding.writeVarUint(e, r.readAt)
  }
  return encoding.toUint8Array(e)
}

export const readReceipts = (r: StrictReader): ReceiptEntry[] => {
  const n = r.varUint(r.remaining)
  const out: ReceiptEntry[] = []
  for (let i = 0; i < n; i++) out.push({ device: r.varString(64), stored: r.varUint(), read: r.varUint(), storedAt: r.varUint(), readAt: r.varUint() })
  return out
}

export function writeDeviceAck(device: string, stored: number, read: number): Uint8Array {
  return encodeSmall((e) => {
    encoding.writeVarUint(e, RoomMessage.DeviceAck)
    encoding.writeVarString(e, device)
    encoding.writeVarUint(e, stored)
    encoding.writeVarUint(e, read)
  })
}

export const readDeviceAck = (r: StrictReader) => ({ device: r.varString(64), stored: r.varUint(), read: r.varUint() })

/**
 * A sync `update` message (`00 02 varUint8Array(update)`) as `snapshot-part`
 * (`varUint(107) • varUint8Array(update)`): the same update, which the relay stores and
 * acknowledges alike, marked as a history snapshot's part for its fan-out.
 */
export function snapshotPartMessage(syncUpdate: Uint8Array): Uint8Array {
  const out = new Uint8Array(syncUpdate.length - 1)
  out[0] = RoomMessage.SnapshotPart
  out.set(syncUpdate.subarray(2), 1)
  return out
}

/** The values of `want-parts`. */
export const WantParts = {
  /** Live parts as placeholders: the device holds all the history it has been sent. */
  Spare: 0,
  /** Every part whole (every connection's default). */
  Whole: 1,
  /** Spare them in catch-ups too, until a compacted row goes to the device (RelayFeature.CatchUpParts). */
  SpareUnlessNeeded: 2,
} as const

/**
 * `want-parts` (C→R): `varUint(108) • uint8(want)`. `true`/`false` are `Whole`/`Spare`.
 *
 * @example ws.send(writeWantParts(WantParts.SpareUnlessNeeded))
 */
export const writeWantParts = (want: boolean | (typeof WantParts)[keyof typeof WantParts]): Uint8Array =>
  Uint8Array.of(RoomMessage.WantParts, want === true ? WantParts.Whole : want === false ? WantParts.Spare : want)
