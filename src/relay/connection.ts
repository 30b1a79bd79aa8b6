/**
 * One device's WebSocket on the relay: challenge–response authentication, then a dispatch
 * table of frame types. Frames are handled one at a time, in arrival order. Untrusted bytes
 * never throw out of here: a malformed frame is counted and its sender cut off.
 */
import type { WebSocket } from 'ws'
import { fromBase64Url, randomBytes, SignatureDomain, toBase64Url, verifyWithDomain } from '../shared/crypto/index.js'
import { isPetrelError } from '../shared/errors.js'
import { readAdmission, readCertificate, verifyCertificate } from '../shared/records.js'
import { CloseCode, type Frame, FrameType, Reason, RelayFeature, readFrame, writeFrame, roomFrameHeader } from '../shared/wire.js'
import type { RelayCore } from './relay-core.js'
import type { RoomMemberConn } from './room.js'

type Handler = (conn: Connection, frame: Frame) => Promise<void> | void

export class Connection implements RoomMemberConn {
  /** The authenticated device key, base64url; '' until the challenge is answered. */
  deviceId = ''
  /** Open rooms; an idle connection has none, so the set is made on the first. */
  private openRooms: Set<string> | undefined
  /** Dropped once used: an authenticated connection keeps nothing of its handshake. */
  challenge: Uint8Array | undefined = randomBytes(32)
  private chain: Promise<void> = RESOLVED
  private closed = false
  private corked = false
  // Times are ms since the process started, so they stay small integers V8 stores unboxed (a
  // Date.now() in a field is a 16-byte heap number per field per connection).
  private lastSeen = sinceStart()
  /** When the socket opened until it authenticates; the last heartbeat sent after. */
  heartbeatAt = this.lastSeen
  /** Token bucket for frames: refilled at framesPerSecond up to frameBurst. */
  private tokens: number
  private tokensAt = this.lastSeen

  constructor(
    readonly ws: WebSocket,
    readonly core: RelayCore,
    readonly ip = '',
    /** The client dialled asking for the `features` frame (upgrade.ts). */
    announceFeatures = false,
  ) {
    this.tokens = core.limits.frameBurst
    core.metrics.connections++
    ws.binaryType = 'nodebuffer'
    // Listeners shared by every connection, found again through the socket: three closures
    // and their context per connection were ~200 bytes of an idle connection's memory.
    owners.set(ws, this)
    ws.on('message', onSocketMessage)
    ws.on('close', onSocketClose)
    ws.on('error', onSocketError)
    const { limits } = core
    this.send(
      writeFrame({
        type: FrameType.Hello,
        challenge: this.challenge!,
        maxFrameBytes: limits.maxFrameBytes,
        maxEnvelopeBytes: limits.maxEnvelopeBytes,
      }),
    )
    if (announceFeatures) this.send(FEATURES_FRAME)
  }

  /** The authenticated device key (decoded on demand: kept only as its id, which is what the hot paths compare). */
  get device(): Uint8Array | undefined {
    return this.deviceId === '' ? undefined : fromBase64Url(this.deviceId)
  }

  get rooms(): ReadonlySet<string> {
    return this.openRooms ?? NO_ROOMS
  }

  addRoom(room: string): void {
    this.openRooms ??= new Set()
    this.openRooms.add(room)
  }

  deleteRoom(room: string): boolean {
    const had = this.openRooms?.delete(room) ?? false
    if (this.openRooms?.size === 0) this.openRooms = undefined
    return had
  }

  /** Deadlines, checked by the core's one sweeper timer: authentication, idle, heartbeat. */
  tick(): void {
    const { limits } = this.core
    const now = sinceStart()
    if (this.deviceId === '') {
      if (now - this.heartbeatAt > limits.authTimeoutMs) this.close(CloseCode.AuthTimeout, 'authentication timed out')
      return
    }
    if (now - this.lastSeen > limits.idleTimeoutMs) return this.close(CloseCode.GoingAway, 'idle')
    if (now - this.heartbeatAt >= limits.heartbeatMs) {
      this.heartbeatAt = now
      this.send(HEARTBEAT)
    }
  }

  /** Send a frame; writes within one event-loop turn are coalesced into one syscall. */
  send(bytes: Uint8Array): void {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return
    // A socket that does not read: everything sent to it waits in memory. Cut off, it catches
    // up when it comes back (paced, see `drained`).
    if (this.ws.bufferedAmount + bytes.length > this.core.limits.maxSendBufferBytes) return this.cutOff('send buffer full')
    const socket = this.socket
    if (socket && !this.corked) {
      this.corked = true
      socket.cork()
      process.nextTick(() => this.flush())
    }
    this.core.metrics.framesOut++
    this.core.metrics.bytesOut += bytes.length
    this.ws.send(bytes, { binary: true })
  }

  /** Bytes sent to this connection that its socket has not taken yet. */
  get unsentBytes(): number {
    return this.ws.bufferedAmount
  }

  /**
   * Resolves once at most `bytes` wait to be written (or the connection closed); a catch-up
   * sends its next page then, so one request for the whole history holds about a page in
   * memory, not the history. Past `sendStallMs` of waiting the connection is cut off.
   */
  async drained(bytes: number): Promise<void> {
    const deadline = sinceStart() + this.core.limits.sendStallMs
    this.flush()
    while (!this.closed && this.ws.bufferedAmount > bytes) {
      if (sinceStart() > deadline) return this.cutOff('send stalled')
      await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS))
    }
  }

  /** Drop a socket that does not read what it is sent: at once, as what waits for it is the problem. */
  private cutOff(reason: string): void {
    if (this.closed) return
    this.core.metrics.reject(reason)
    this.ws.terminate()
    this.onClose()
  }

  /** Write out what is corked now rather than at the end of this turn. */
  flush(): void {
    if (!this.corked) return
    this.corked = false
    this.socket?.uncork()
  }

  private get socket(): { cork(): void; uncork(): void } | undefined {
    return (this.ws as unknown as { _socket?: { cork(): void; uncork(): void } })._socket
  }

  deliver(room: string, message: Uint8Array): void {
    this.send(roomFrame(room, message))
  }


  close(code: number, reason: string): void {
    if (this.closed) return
    this.ws.close(code, reason)
    if (this.ws.readyState !== this.ws.CLOSED) this.core.closingSockets.add(this.ws)
    this.onClose()
  }

  /** @internal The socket's message listener (shared by all connections, see the constructor). */
  onMessage(data: Buffer, isBinary: boolean): void {
    this.lastSeen = sinceStart()
    if (!this.takeToken()) return
    this.core.metrics.framesIn++
    this.core.metrics.bytesIn += data.length
    if (!isBinary) return this.violation('text frame', 'text frames are not part of the protocol')
    let frame: Frame
    try {
      frame = readFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
    } catch (err) {
      if (isPetrelError(err, 'version_mismatch')) {
        this.core.metrics.reject('version')
        return this.close(CloseCode.VersionMismatch, err.message)
      }
      return this.violation('malformed frame', (err as Error).message)
    }
    this.core.metrics.framesInByType.inc({ type: frameTypeName[frame.type] ?? String(frame.type) })
    const handler = handlers[frame.type]
    if (!handler) return this.violation('unexpected frame', `frame type ${frame.type} is not sent by clients`)
    if (this.deviceId === '' && frame.type !== FrameType.Auth && frame.type !== FrameType.Heartbeat) {
      return this.violation('unauthenticated', 'authenticate first')
    }
    // Idle again afterwards: hold the shared resolved promise, not this frame's chain.
    const settle = () => {
      if (this.chain === next) this.chain = RESOLVED
    }
    let next: Promise<void>
    if (this.chain === RESOLVED && frame.type === FrameType.Room) {
      if (this.closed) return
      // Nothing of this connection is pending: a room message is handled now, in order, and
      // queues only what must wait (a promise chain per frame was 3 KB of garbage a message).
      let pending: Promise<void> | undefined
      try {
        pending = roomMessage(this, frame)
      } catch (err) {
        return this.handlerFailed(err, frame)
      }
      if (pending === undefined) return
      next = pending.then(settle, (err) => {
        settle()
        this.handlerFailed(err, frame)
      })
    } else {
      next = this.chain
        .then(() => (this.closed ? undefined : handler(this, frame)))
        .then(settle, (err) => {
          settle()
          this.handlerFailed(err, frame)
        })
    }
    this.chain = next
  }

  private handlerFailed(err: unknown, frame: Frame): void {
    if (isPetrelError(err) && (err.code === 'malformed' || err.code === 'version_mismatch' || err.code === 'too_large')) {
      this.violation('malformed payload', err.message)
      return
    }
    this.core.log.error('frame handler failed', { device: this.deviceId, frame: frameName(frame.type), error: (err as Error).message })
    this.core.metrics.reject('internal')
    // The store or the bus failed under it (a database gone for a moment): the device never
    // heard, and a room it was opening, or a sync it asked for, waited for good. The room is
    // denied for now (Internal: the device opens it again, backing off), so one room whose
    // handling keeps failing leaves the device's others alone; any other frame closes the
    // connection (try again).
    if (frame.type === FrameType.Open || frame.type === FrameType.Room) {
      if (this.deleteRoom(frame.room)) this.core.leaveRoom(this, frame.room)
      this.send(writeFrame({ type: FrameType.Denied, room: frame.room, reason: Reason.Internal, message: 'relay trouble; try again' }))
      return
    }
    this.close(CloseCode.TryAgain, 'relay trouble; retry')
  }

  /** False when the frame must be dropped; closes the socket when abuse goes on. */
  private takeToken(): boolean {
    const { framesPerSecond, frameBurst } = this.core.limits
    const now = sinceStart()
    this.tokens = Math.min(frameBurst, this.tokens + ((now - this.tokensAt) * framesPerSecond) / 1000)
    this.tokensAt = now
    this.tokens -= 1
    if (this.tokens >= 0) return true
    this.core.metrics.reject('rate limited')
    // Dropped updates are repaired by the client's next sync; a sender that keeps going is cut off.
    if (this.tokens < -frameBurst) this.close(CloseCode.RateLimited, 'too many frames')
    return false
  }

  /** Count, log (no payload) and cut the sender off. */
  violation(reason: string, detail: string): void {
    this.core.metrics.reject(reason)
    this.core.log.warn('protocol violation', { device: this.deviceId || undefined, reason, detail })
    this.close(CloseCode.Malformed, reason)
  }

  /** @internal The socket's close and error listener. */
  onClose(): void {
    if (this.closed) return
    this.closed = true
    this.core.metrics.connections--
    for (const room of this.rooms) this.core.leaveRoom(this, room)
    this.openRooms = undefined
    this.core.connectionClosed(this)
  }

  get isClosed(): boolean {
    return this.closed
  }
}

const HEARTBEAT = writeFrame({ type: FrameType.Heartbeat })
/** What this relay understands beyond version 1 (wire.ts): sent after hello to clients that ask. */
const FEATURES_FRAME = writeFrame({ type: FrameType.Features, features: RelayFeature.SnapshotParts | RelayFeature.CatchUpParts })
const owners = new WeakMap<WebSocket, Connection>()

/**
 * The last frame built, and what from: a fan-out delivers one message to every peer in a row.
 * (Room messages are never modified once delivered.)
 */
let lastFrame: { room: string; message: Uint8Array; frame: Buffer } | undefined
const KEPT_FRAME_BYTES = 16 * 1024

/**
 * A room frame as a Buffer, which ws sends as it is: a plain small Uint8Array lives inside
 * V8's heap, and ws asking for its ArrayBuffer moved it out to a backing store of its own. Not
 * from Node's shared pool: a frame waiting behind a slow peer would keep 8 KB alive. ws does
 * not modify what a server sends (no masking), so peers share one frame.
 */
function roomFrame(room: string, message: Uint8Array): Buffer {
  if (lastFrame?.message === message && lastFrame.room === room) return lastFrame.frame
  const header = roomFrameHeader(room)
  const frame = Buffer.allocUnsafeSlow(header.length + message.length)
  frame.set(header)
  frame.set(message, header.length)
  // A large one (a catch-up page) goes to one peer: not kept after it is sent.
  lastFrame = frame.length <= KEPT_FRAME_BYTES ? { room, message, frame } : undefined
  return frame
}

function onSocketMessage(this: WebSocket, data: Buffer, isBinary: boolean): void {
  owners.get(this)?.onMessage(data, isBinary)
  releaseReceiveQueue(this)
}

/**
 * ws's receiver queues socket chunks in an array that keeps its grown capacity (~150 bytes)
 * for the socket's life, so a connection that has received any frame costs that much more
 * idle than one that never did. Once a frame leaves it empty, a fresh array costs nothing
 * until the next chunk arrives. A private field of ws: if it ever moves, this does nothing.
 */
function releaseReceiveQueue(ws: WebSocket): void {
  const receiver = (ws as unknown as { _receiver?: { _buffers?: unknown[] } })._receiver
  if (receiver?._buffers?.length === 0) receiver._buffers = []
}

function onSocketClose(this: WebSocket): void {
  const conn = owners.get(this)
  conn?.core.closingSockets.delete(this)
  conn?.onClose()
}

/**
 * A socket's error: ws closes it (1009 for a frame over `maxFrameBytes`, 1002 for a protocol
 * error). Counted and logged like every other refusal: an oversized frame left no trace.
 */
function onSocketError(this: WebSocket, err: Error & { code?: string }): void {
  const conn = owners.get(this)
  if (conn) {
    const tooLarge = err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH'
    conn.core.metrics.reject(tooLarge ? 'frame too large' : 'socket error')
    conn.core.log.info(tooLarge ? 'frame over maxFrameBytes; closed' : 'socket error; closed', { device: conn.deviceId, ip: conn.ip, error: err.message })
  }
  onSocketClose.call(this)
}
// Monotonic, and a small integer for the first ~24 days of a process (boxed after, still right).
const sinceStart = () => Math.floor(performance.now())
const RESOLVED: Promise<void> = Promise.resolve()
/** How often a paced catch-up looks whether its socket took what it was sent. */
const DRAIN_POLL_MS = 5
const NO_ROOMS: ReadonlySet<string> = new Set()

const frameTypeName: Record<number, string> = Object.fromEntries(Object.entries(FrameType).map(([k, v]) => [v, k.toLowerCase()]))

/** A room message; a promise only when part of its work has to wait. */
function roomMessage(conn: Connection, frame: Extract<Frame, { type: typeof FrameType.Room }>): Promise<void> | undefined {
  if (!conn.rooms.has(frame.room)) {
    // A message for a room that was just closed or refused; not an attack, just late.
    conn.core.metrics.reject('room not open')
    return undefined
  }
  return conn.core.onRoomMessage(conn, frame.room, frame.message)
}

const handlers: Partial<Record<Frame['type'], Handler>> = {
  [FrameType.Heartbeat]: () => {},
  [FrameType.Auth]: async (conn, frame) => {
    if (frame.type !== FrameType.Auth) return
    const challenge = conn.challenge
    if (conn.deviceId !== '' || !challenge) return conn.violation('double auth', 'already authenticated')
    conn.challenge = undefined
    const cert = readCertificate(frame.certificate)
    const ok =
      (await verifyCertificate(cert)) && (await verifyWithDomain(SignatureDomain.ConnectChallenge, cert.devicePub, challenge, frame.signature))
    if (!ok) {
      conn.core.metrics.reject('auth failed')
      return conn.close(CloseCode.Unauthorized, 'authentication failed')
    }
    conn.deviceId = toBase64Url(cert.devicePub)
    // Authenticated: the heartbeat clock starts now (it held the opening time until here).
    conn.heartbeatAt = sinceStart()
    conn.send(writeFrame({ type: FrameType.Ready }))
    await listRooms(conn, 1_000)
  },
  [FrameType.Open]: async (conn, frame) => {
    if (frame.type !== FrameType.Open) return
    if (conn.rooms.has(frame.room)) return
    if (conn.rooms.size >= conn.core.limits.maxRoomsPerConnection) {
      conn.core.metrics.reject('too many rooms')
      conn.send(writeFrame({ type: FrameType.Denied, room: frame.room, reason: 11, message: 'too many open conversations' }))
      return
    }
    await conn.core.openRoom(conn, frame.room, readAdmission(frame.admission))
  },
  [FrameType.Close]: (conn, frame) => {
    if (frame.type !== FrameType.Close) return
    if (conn.deleteRoom(frame.room)) conn.core.leaveRoom(conn, frame.room)
  },
  [FrameType.Room]: (conn, frame) => (frame.type === FrameType.Room ? roomMessage(conn, frame) : undefined),
}

/**
 * Tell a device just authenticated which conversations it is in (discovery). Failing (the
 * database gone for a moment), the connection stays: closing it (as until the fortieth
 * session) made every device dial again at once, and fail again, for as long as the outage
 * lasted. It is tried again, backing off, while the connection lasts.
 */
async function listRooms(conn: Connection, retryMs: number): Promise<void> {
  try {
    await conn.core.sendRooms(conn)
  } catch (err) {
    if (conn.isClosed) return
    conn.core.log.warn('could not list a device\'s conversations; trying again', { device: conn.deviceId, inMs: retryMs, error: (err as Error).message })
    const timer = setTimeout(() => {
      if (!conn.isClosed) void listRooms(conn, Math.min(retryMs * 2, 60_000))
    }, retryMs)
    timer.unref?.()
  }
}

/** A frame type's name, for logs. */
function frameName(type: number): string {
  for (const [name, value] of Object.entries(FrameType)) if (value === type) return name
  return String(type)
}
