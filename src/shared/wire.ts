/**
 * The device connection: one WebSocket per device, carrying every conversation.
 *
 * ```
 * frame      := uint8 PROTOCOL_VERSION • varUint type • body
 * hello      (R→C) := varUint8Array challenge(32) • varUint maxFrameBytes • varUint maxEnvelopeBytes
 * auth       (C→R) := varUint8Array deviceCertificate • varUint8Array challengeSignature(64)
 * ready      (R→C) := (empty)
 * open       (C→R) := varString room • varUint8Array admission   (empty, a genesis record, or a join proof)
 * opened     (R→C) := varString room
 * denied     (R→C) := varString room • varUint reason • varString message
 * close      (C→R) := varString room
 * room       (both) := varString room • rest: one y-websocket message (see room-messages.ts)
 * heartbeat  (both) := (empty)
 * notice     (R→C) := varUint reason • varString message
 * rooms      (R→C) := varUint n • { varString room }{n}
 *                     conversations this device is a member of: all of them after `ready`, then
 *                     each one it is added to (by an admin, or by another device of its person)
 * features   (R→C) := varUint bits • rest (RelayFeature; bits past 32 and any rest are for later
 *                     versions, ignored)
 * ```
 * A relay sends `features` only to a client that dialled with the query parameter
 * `FEATURES_QUERY` (clients of before it drop the connection on a frame type they do not
 * know), and a client uses a feature only on a connection whose relay announced it (an older
 * relay cuts off a device that sends what it does not know).
 * Every frame is checked by `readFrame`, which never throws anything but a PetrelError and
 * never reads past the end. Versions: a frame whose first byte is not PROTOCOL_VERSION is
 * answered with close code `VersionMismatch` and a reason naming both versions.
 */
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import { ErrorCode, PetrelError } from './errors.js'

export const PROTOCOL_VERSION = 1

export const FrameType = {
  Hello: 0,
  Auth: 1,
  Ready: 2,
  Open: 3,
  Opened: 4,
  Denied: 5,
  Close: 6,
  Room: 7,
  Heartbeat: 8,
  Notice: 9,
  Rooms: 10,
  Features: 11,
} as const
export type FrameType = (typeof FrameType)[keyof typeof FrameType]

/** The query parameter of the WebSocket URL by which a client asks for the `features` frame. */
export const FEATURES_QUERY = 'features'

/** `url` with `FEATURES_QUERY` added: what a client dials. */
export function withFeaturesQuery(url: string): string {
  const hash = url.indexOf('#')
  const base = hash === -1 ? url : url.slice(0, hash)
  return `${base}${base.includes('?') ? '&' : '?'}${FEATURES_QUERY}=1`
}

/** What a relay understands beyond protocol version 1, as bits of the `features` frame. */
export const RelayFeature = {
  /**
   * Room messages `snapshot-part` and `want-parts` (room-messages.ts): a device uploads its
   * snapshot parts marked, and live devices that hold the history get a placeholder instead.
   */
  SnapshotParts: 1,
  /**
   * `want-parts 2` (room-messages.ts): the relay spares a device parts in its catch-ups too,
   * until it sends that device a compacted row (one the device lacks, which a snapshot stands
   * for), and live afterwards when it sent none.
   */
  CatchUpParts: 2,
} as const

/**
 * WebSocket close codes (4000–4999 are private use). The device connection stops dialling
 * after VersionMismatch and Unauthorized (retrying cannot help; `connect()` tries again) and
 * reconnects with backoff after anything else.
 */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  /** RFC 6455: message too big (frame over the relay's limit). */
  MessageTooBig: 1009,
  /** Sent malformed bytes; cut off. */
  Malformed: 4400,
  Unauthorized: 4401,
  VersionMismatch: 4406,
  AuthTimeout: 4408,
  RateLimited: 4429,
  /** Transient trouble on the relay (storage failed, a peer fell behind): reconnect and resync. */
  TryAgain: 4500,
  /** The relay is shutting down: reconnect, to another node when there is one. */
  Restarting: 4503,
} as const
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode]

/** Why a room was refused or an update not stored; travels as a varUint. */
export const Reason = {
  NotMember: 1,
  UnknownRoom: 2,
  BadAdmission: 3,
  InviteExpired: 4,
  InviteUsedUp: 5,
  InviteRevoked: 6,
  TooLarge: 7,
  ClientIdTaken: 8,
  Malformed: 9,
  Gap: 10,
  TooManyRooms: 11,
  Forbidden: 12,
  Internal: 13,
  /** The conversation holds as many bytes as the relay allows. */
  QuotaExceeded: 14,
  /** An envelope sealed under a key epoch that is not the current one. */
  StaleEpoch: 15,
  /**
   * Past the quota, and a blank stands in its place for good (a kept record follows it). With
   * 14 nothing of it was stored: the sender's next sync sends it again.
   */
  QuotaExceededForGood: 16,
  /** A join that would give its person, or the conversation, more devices than it may hold. */
  TooManyDevices: 17,
} as const
export type Reason = (typeof Reason)[keyof typeof Reason]

export const reasonName = (reason: number): string =>
  (Object.entries(Reason).find(([, v]) => v === reason)?.[0] ?? `reason ${reason}`).replace(/[A-Z]/g, (c, i) =>
    i === 0 ? c.toLowerCase() : ` ${c.toLowerCase()}`,
  )

export type Frame =
  | { type: typeof FrameType.Hello; challenge: Uint8Array; maxFrameBytes: number; maxEnvelopeBytes: number }
  | { type: typeof FrameType.Auth; certificate: Uint8Array; signature: Uint8Array }
  | { type: typeof FrameType.Ready }
  | { type: typeof FrameType.Open; room: string; admission: Uint8Array }
  | { type: typeof FrameType.Opened; room: string }
  | { type: typeof FrameType.Denied; room: string; reason: number; message: string }
  | { type: typeof FrameType.Close; room: string }
  | { type: typeof FrameType.Room; room: string; message: Uint8Array }
  | { type: typeof FrameType.Heartbeat }
  | { type: typeof FrameType.Notice; reason: number; message: string }
  | { type: typeof FrameType.Rooms; rooms: string[] }
  | { type: typeof FrameType.Features; features: number }

const MAX_ROOM_ID = 64
const MAX_TEXT = 1024
/** A rooms frame lists at most this many (the relay sends longer lists in several frames). */
export const MAX_ROOMS_LISTED = 4096

/** Encode one frame. */
export function writeFrame(frame: Frame): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeUint8(e, PROTOCOL_VERSION)
  encoding.writeVarUint(e, frame.type)
  switch (frame.type) {
    case FrameType.Hello:
      encoding.writeVarUint8Array(e, frame.challenge)
      encoding.writeVarUint(e, frame.maxFrameBytes)
      encoding.writeVarUint(e, frame.maxEnvelopeBytes)
      break
    case FrameType.Auth:
      encoding.writeVarUint8Array(e, frame.certificate)
      encoding.writeVarUint8Array(e, frame.signature)
      break
    case FrameType.Open:
      encoding.writeVarString(e, frame.room)
      encoding.writeVarUint8Array(e, frame.admission)
      break
    case FrameType.Opened:
    case FrameType.Close:
      encoding.writeVarString(e, frame.room)
      break
    case FrameType.Denied:
      encoding.writeVarString(e, frame.room)
      encoding.writeVarUint(e, frame.reason)
      encoding.writeVarString(e, frame.message)
      break
    case FrameType.Room:
      encoding.writeVarString(e, frame.room)
      encoding.writeUint8Array(e, frame.message)
      break
    case FrameType.Notice:
      encoding.writeVarUint(e, frame.reason)
      encoding.writeVarString(e, frame.message)
      break
    case FrameType.Rooms:
      encoding.writeVarUint(e, frame.rooms.length)
      for (const room of frame.rooms) encoding.writeVarString(e, room)
      break
    case FrameType.Features:
      encoding.writeVarUint(e, frame.features)
      break
    case FrameType.Ready:
    case FrameType.Heartbeat:
      break
  }
  return encoding.toUint8Array(e)
}

/** Room frame headers (version • type • room) by room id: every delivery to a room repeats it. */
const roomHeaders = new Map<string, Uint8Array>()
const ROOM_HEADER_CACHE = 4096

/** Encode a room frame around an already-encoded y-websocket message: one allocation, one copy. */
export function writeRoomFrame(room: string, message: Uint8Array): Uint8Array {
  const header = roomFrameHeader(room)
  const out = new Uint8Array(header.length + message.length)
  out.set(header)
  out.set(message, header.length)
  return out
}

/** The bytes of a room frame before its message (version, type, room), cached per room. */
export function roomFrameHeader(room: string): Uint8Array {
  let header = roomHeaders.get(room)
  if (!header) {
    const e = encoding.createEncoder()
    encoding.writeUint8(e, PROTOCOL_VERSION)
    encoding.writeVarUint(e, FrameType.Room)
    encoding.writeVarString(e, room)
    header = encoding.toUint8Array(e)
    if (roomHeaders.size >= ROOM_HEADER_CACHE) roomHeaders.clear()
    roomHeaders.set(room, header)
  }
  return header
}

/**
 * A bounds-checked reader over untrusted bytes. lib0's decoder trusts its input (it returns
 * undefined past the end, accepts overlong varUints); these helpers do not.
 */
export class StrictReader {
  pos = 0
  constructor(readonly bytes: Uint8Array) {}
  get remaining(): number {
    return this.bytes.length - this.pos
  }
  uint8(): number {
    if (this.pos >= this.bytes.length) throw malformed('unexpected end of frame')
    return this.bytes[this.pos++]!
  }
  varUint(max = Number.MAX_SAFE_INTEGER): number {
    let value = 0
    let mult = 1
    for (let i = 0; i < 8; i++) {
      const b = this.uint8()
      value += (b & 0x7f) * mult
      if (b < 0x80) {
        if (b === 0 && i > 0) throw malformed('overlong varUint')
        if (value > max) throw malformed(`value ${value} over limit ${max}`)
        return value
      }
      mult *= 128
    }
    throw malformed('varUint longer than 8 bytes')
  }
  bytesOf(len: number): Uint8Array {
    if (len > this.remaining) throw malformed('length past end of frame')
    const out = this.bytes.subarray(this.pos, this.pos + len)
    this.pos += len
    return out
  }
  varBytes(max: number): Uint8Array {
    return this.bytesOf(this.varUint(max))
  }
  varString(maxBytes: number): string {
    const raw = this.varBytes(maxBytes)
    try {
      return utf8.decode(raw)
    } catch {
      throw malformed('invalid UTF-8')
    }
  }
  rest(): Uint8Array {
    return this.bytesOf(this.remaining)
  }
  end(): void {
    if (this.remaining !== 0) throw malformed('trailing bytes')
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

const malformed = (message: string) => new PetrelError(ErrorCode.Malformed, message)

/** Decode one frame; throws PetrelError (`malformed` or `version_mismatch`) on anything else. */
export function readFrame(bytes: Uint8Array): Frame {
  const r = new StrictReader(bytes)
  const version = r.uint8()
  if (version !== PROTOCOL_VERSION) {
    throw new PetrelError(
      ErrorCode.VersionMismatch,
      `protocol version ${version} is not supported (this side speaks ${PROTOCOL_VERSION})`,
    )
  }
  const type = r.varUint(255)
  let frame: Frame
  switch (type) {
    case FrameType.Hello:
      frame = { type, challenge: r.varBytes(64), maxFrameBytes: r.varUint(), maxEnvelopeBytes: r.varUint() }
      break
    case FrameType.Auth:
      frame = { type, certificate: r.varBytes(4096), signature: r.varBytes(64) }
      break
    case FrameType.Ready:
    case FrameType.Heartbeat:
      frame = { type }
      break
    case FrameType.Open:
      frame = { type, room: readRoomId(r), admission: r.varBytes(64 * 1024) }
      break
    case FrameType.Opened:
    case FrameType.Close:
      frame = { type, room: readRoomId(r) }
      break
    case FrameType.Denied:
      frame = { type, room: readRoomId(r), reason: r.varUint(1 << 16), message: r.varString(MAX_TEXT) }
      break
    case FrameType.Room: {
      const room = readRoomId(r)
      const message = r.rest()
      if (message.length === 0) throw malformed('empty room message')
      return { type, room, message }
    }
    case FrameType.Notice:
      frame = { type, reason: r.varUint(1 << 16), message: r.varString(MAX_TEXT) }
      break
    case FrameType.Rooms: {
      const n = r.varUint(MAX_ROOMS_LISTED)
      const rooms: string[] = []
      for (let i = 0; i < n; i++) rooms.push(readRoomId(r))
      frame = { type, rooms }
      break
    }
    case FrameType.Features: {
      // Later relays may add fields after the bits: a client must not redial over them.
      const features = r.varUint()
      r.rest()
      return { type, features }
    }
    default:
      throw malformed(`unknown frame type ${type}`)
  }
  r.end()
  return frame
}

const ROOM_ID = /^[A-Za-z0-9_-]{16,64}$/

function readRoomId(r: StrictReader): string {
  const room = r.varString(MAX_ROOM_ID)
  if (!ROOM_ID.test(room)) throw malformed('bad room id')
  return room
}

/** Room ids are base64url strings of 16–64 characters. */
export const isRoomId = (s: string): boolean => ROOM_ID.test(s)

/** Re-export so both sides build y-websocket messages with the same lib0 version. */
export { decoding, encoding }
