/**
 * The relay's check of an outer update, before anything is stored. The relay never runs
 * Yjs on network bytes: `parseUpdate` is our strict, bounded V1 parser, and only one narrow
 * shape is accepted — fresh keys of the root maps `log` (sealed envelopes) and `rec`
 * (signed records) with binary content, no deletions. Anything else is a protocol violation
 * and its sender is cut off; an envelope over the size limit is refused for good and a GC
 * placeholder keeps the client's clocks contiguous. Past the room's quota nothing is stored
 * after a group's last kept struct (PROTOCOL §5.3 step 6): placeholders there would let the
 * room grow without bound.
 */
import * as encoding from 'lib0/encoding'
import { MAX_CLIENT_ID } from '../shared/client-id.js'
import { matchesBase64Url } from '../shared/crypto/index.js'
import { readEnvelope } from '../shared/envelope.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { envelopeKey, OUTER_LOG, OUTER_RECORDS } from '../shared/outer-keys.js'
import type { ClockRange } from '../shared/room-messages.js'
import { Reason } from '../shared/wire.js'
import { parseUpdate } from '../shared/yjs-v1.js'

/** One struct of a row: its bytes, and what the relay still has to decide about it. */
export interface RowPart {
  clock: number
  bytes: Uint8Array
  /** A signed record to verify and apply (in order) before storing. */
  record?: Uint8Array
  /** The epoch an envelope was sealed under, and its key check, to refuse stale ones. */
  epoch?: number
  keyCheck?: Uint8Array
}

export interface ValidatedRow {
  client: number
  clock: number
  len: number
  count: number
  parts: RowPart[]
}

export interface ValidatedUpdate {
  rows: ValidatedRow[]
  /** Clients this update binds to the device for the first time. */
  newClients: number[]
  /** `rec` values to verify and apply, with their keys. */
  records: Array<{ key: string; bytes: Uint8Array }>
  /** Envelopes refused for good, each with its reason (too large, conversation full). */
  refused: Array<ClockRange & { reason: number }>
  /** Bytes of the stored structs. */
  bytes: number
  /** Structs the room already had (a resend after a lost ack). */
  duplicates: number
  /** Clock ranges of this device's own clients that were already stored: re-acknowledge them. */
  ownDuplicates: ClockRange[]
  /** Uploaded as `snapshot-part`: its envelopes are a history snapshot's (relay-core.ts fanOut). */
  part?: boolean
}

export class UpdateRefused extends Error {
  constructor(
    readonly reason: number,
    message: string,
  ) {
    super(message)
  }
}

/** One GC struct of length 1: stands in for a refused envelope. */
const GC_PLACEHOLDER = Uint8Array.of(0x00, 0x01)

export interface RoomClients {
  get(client: number): { device: string; next: number } | undefined
}

/**
 * Check an outer update from the device `deviceId` (base64url) against the room's client index. Throws PetrelError
 * (malformed: cut the sender off) or UpdateRefused (a well-formed update the relay will not
 * store, e.g. a client id owned by another device, or a gap).
 */
export function validateOuterUpdate(
  bytes: Uint8Array,
  deviceId: string,
  clients: RoomClients,
  limits: { maxFrameBytes: number; maxEnvelopeBytes: number },
  remainingRoomBytes = Number.POSITIVE_INFINITY,
  remainingRecordBytes = remainingRoomBytes,
): ValidatedUpdate {
  const parsed = parseUpdate(bytes, { maxBytes: limits.maxFrameBytes })
  // The delete set is ignored, never stored: the outer log only grows, and the only deletions
  // clients hold are the GC placeholders the relay itself wrote (Yjs counts GC as deleted, so
  // every later sync step 2 carries them).
  const out: ValidatedUpdate = { rows: [], newClients: [], records: [], refused: [], duplicates: 0, ownDuplicates: [], bytes: 0 }
  for (const group of parsed.groups) {
    // Yjs draws client ids as uint32, and room messages carry them so (room-messages.ts): a row
    // of a larger one would make every catch-up page holding it unreadable to every member.
    if (group.client > MAX_CLIENT_ID) throw new PetrelError(ErrorCode.Malformed, `client id ${group.client} is over 2^32 - 1`)
    const owner = clients.get(group.client)
    const next = owner?.next ?? 0
    const last = group.structs[group.structs.length - 1]
    const first = group.structs[0]
    if (owner?.device === deviceId && first && first.clock < next) {
      // A resend of our own rows: its ack was lost, so acknowledge again.
      out.ownDuplicates.push({ client: group.client, clock: first.clock, len: Math.min(next, last!.clock + last!.len) - first.clock })
    }
    if (last && last.clock + last.len <= next) {
      // Everything here is stored already: a resend, or a step 2 answering a state vector
      // that was stale by the time it arrived (it may carry other devices' rows).
      out.duplicates += group.structs.length
      continue
    }
    if (owner && owner.device !== deviceId) {
      throw new UpdateRefused(Reason.ClientIdTaken, `client id ${group.client} belongs to another device`)
    }
    const parts: RowPart[] = []
    let start = -1
    let len = 0
    let count = 0
    // This group's refusals start here in out.refused.
    const refusedFrom = out.refused.length
    // Parts up to here are kept; quota-refused ones after the last kept part are not stored.
    let kept = 0
    let keptLen = 0
    let keptBytes = out.bytes
    for (const s of group.structs) {
      if (s.kind !== 'item' || s.contentRef !== 3 || s.origin || s.rightOrigin || s.key === undefined) {
        throw new PetrelError(ErrorCode.Malformed, 'outer items must be fresh binary map entries')
      }
      if (s.clock + s.len <= next) {
        out.duplicates++
        continue
      }
      if (s.clock < next) throw new PetrelError(ErrorCode.Malformed, 'struct straddles the stored clock')
      if (start === -1) {
        if (s.clock > next) throw new UpdateRefused(Reason.Gap, `client ${group.client} skips clocks ${next}..${s.clock}`)
        start = s.clock
      }
      const value = s.binary!
      const part: RowPart = { clock: s.clock, bytes: bytes.subarray(s.start, s.end) }
      if (s.key !== envelopeKey(group.client, s.clock)) throw new PetrelError(ErrorCode.Malformed, 'outer key does not match its item id')
      if (s.parentRoot === OUTER_LOG) {
        const tooLarge = value.length > limits.maxEnvelopeBytes
        // What this struct would store: a placeholder in place of one too large.
        const cost = tooLarge ? GC_PLACEHOLDER.length : value.length
        const full = out.bytes + cost > remainingRoomBytes
        if (tooLarge || full) {
          out.refused.push({ client: group.client, clock: s.clock, len: 1, reason: full ? Reason.QuotaExceeded : Reason.TooLarge })
          parts.push({ clock: s.clock, bytes: GC_PLACEHOLDER })
          out.bytes += GC_PLACEHOLDER.length
          len += s.len
          count++
          if (!full) {
            kept = parts.length
            keptLen = len
            keptBytes = out.bytes
          }
          continue
        }
        const header = readEnvelope(value)
        if (!matchesBase64Url(header.senderDevicePub, deviceId)) {
          throw new PetrelError(ErrorCode.Malformed, 'envelope sealed by another device')
        }
        part.epoch = header.epoch
        part.keyCheck = header.keyCheck
      } else if (s.parentRoot === OUTER_RECORDS) {
        // Records may take a full room past its quota, as far as their own allowance: a
        // member must still be removable from a conversation that is full. Past it a record
        // is refused for good, and its placeholder is kept: its author takes the refusal as
        // final (it stops counting the record), so the record must never be stored later,
        // as it would be if its resend met a room with space again.
        if (out.bytes + (s.end - s.start) > remainingRecordBytes) {
          out.refused.push({ client: group.client, clock: s.clock, len: 1, reason: Reason.QuotaExceeded })
          parts.push({ clock: s.clock, bytes: GC_PLACEHOLDER })
          out.bytes += GC_PLACEHOLDER.length
          len += s.len
          count++
          kept = parts.length
          keptLen = len
          keptBytes = out.bytes
          continue
        }
        out.records.push({ key: s.key, bytes: value })
        part.record = value
      } else {
        throw new PetrelError(ErrorCode.Malformed, `unknown outer root ${s.parentRoot ?? '(nested)'}`)
      }
      parts.push(part)
      out.bytes += s.end - s.start
      len += s.len
      count++
      kept = parts.length
      keptLen = len
      keptBytes = out.bytes
    }
    // A full room stores nothing after the last part it keeps: a placeholder there would let
    // a member grow the room past its quota (a row and a client id a frame, without end). The
    // device's next write then meets a gap, and the resend is refused again until compaction
    // frees room; the refused parts' ranges are reported all the same.
    if (kept < parts.length) {
      len = keptLen
      count = kept
      parts.length = kept
      out.bytes = keptBytes
    }
    // Refused for quota before a part kept: its blank stands for good, and the sender must know
    // (it will not be sent again by its sync).
    if (count > 0) {
      const end = start + len
      for (let i = refusedFrom; i < out.refused.length; i++) {
        const r = out.refused[i]!
        if (r.reason === Reason.QuotaExceeded && r.clock < end) r.reason = Reason.QuotaExceededForGood
      }
    }
    if (count === 0) continue
    if (!owner) out.newClients.push(group.client)
    out.rows.push({ client: group.client, clock: start, len, count, parts })
  }
  return out
}

/** Refuse one part for good: a GC placeholder keeps the client's clocks contiguous. */
export function blankPart(part: RowPart): void {
  part.bytes = GC_PLACEHOLDER
  part.record = undefined
  part.epoch = undefined
}

/**
 * A row cut so every signed record stands in a row of its own: compaction after a snapshot
 * keeps record rows (membership is folded from all of them) and replaces the others, so a
 * record must not keep the envelopes written beside it alive.
 */
export function splitAtRecords(row: ValidatedRow, isRecord: (part: RowPart) => boolean): ValidatedRow[] {
  if (row.parts.length === 1 || !row.parts.some(isRecord)) return [row]
  const out: ValidatedRow[] = []
  let current: ValidatedRow | undefined
  row.parts.forEach((part, i) => {
    const end = i + 1 < row.parts.length ? row.parts[i + 1]!.clock : row.clock + row.len
    const alone = isRecord(part)
    if (!current || alone || isRecord(current.parts[0]!)) {
      current = { client: row.client, clock: part.clock, len: 0, count: 0, parts: [] }
      out.push(current)
    }
    current.parts.push(part)
    current.len += end - part.clock
    current.count++
    if (alone) current = undefined
  })
  return out
}

/** The row's struct bytes, as stored. */
export function rowStructs(row: ValidatedRow): Uint8Array {
  return concat(row.parts.map((p) => p.bytes))
}

function concat(parts: Uint8Array[]): Uint8Array {
  // A view, not a copy: the row lives until it is stored and fanned out, and the store copies.
  if (parts.length === 1) return parts[0]!
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}

/**
 * An outer update holding `records` as entries of the records map, written from `client` at
 * clocks 0…n-1, as a device's Yjs would write them (V1):
 *
 * ```
 * update := varUint(1) • varUint(n) • varUint(client) • varUint(0)
 *           • n × ( uint8(0x23) • varUint(1) • varString('rec') • varString(envelopeKey(client, i)) • varUint8Array(record_i) )
 *           • varUint(0)                                   ; item, parent a root, a key, binary content; no deletions
 * ```
 * The relay writes one when it admits a device by `open` (relay-core.ts), so the records that
 * admitted it are in the log every device folds, whatever the device does next.
 *
 * @example
 * ```ts
 * const update = recordsUpdate(client, [inviteBytes, joinBytes])
 * ```
 */
export function recordsUpdate(client: number, records: readonly Uint8Array[]): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, 1)
  encoding.writeVarUint(e, records.length)
  encoding.writeVarUint(e, client)
  encoding.writeVarUint(e, 0)
  records.forEach((record, i) => {
    encoding.writeUint8(e, 0x23)
    encoding.writeVarUint(e, 1)
    encoding.writeVarString(e, OUTER_RECORDS)
    encoding.writeVarString(e, envelopeKey(client, i))
    encoding.writeVarUint8Array(e, record)
  })
  encoding.writeVarUint(e, 0)
  return encoding.toUint8Array(e)
}

