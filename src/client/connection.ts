/**
 * The device's one WebSocket to the relay: authentication, reconnect with capped exponential
 * backoff and full jitter, a liveness watchdog, browser online/offline handling, and the
 * multiplexing of every conversation's virtual socket over it.
 */
import { SignatureDomain, signWithDomain } from '../shared/crypto/index.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { KEEPALIVE_MESSAGE, RoomMessage, SyncStep, snapshotPartMessage } from '../shared/room-messages.js'
import { CloseCode, type Frame, FrameType, RelayFeature, readFrame, reasonName, withFeaturesQuery, writeFrame, writeRoomFrame } from '../shared/wire.js'
import { splitUpdate } from '../shared/yjs-v1.js'
import * as encoding from 'lib0/encoding'
import type { Emitter } from './emitter.js'
import type { Identity } from './identity.js'
import type { Multiplexer, VirtualSocket } from './virtual-socket.js'

export type ConnectionState = 'online' | 'connecting' | 'offline'

export interface RoomHandler {
  /** Admission bytes to send with OPEN (genesis or join proof), or an empty array. */
  admission(): Uint8Array
  denied(reason: number, message: string): void
}

export type WebSocketCtor = new (url: string) => WebSocket

export interface ConnectionEvents extends Record<string, (...args: never[]) => void> {
  /** The connection to the relay changed: 'online', 'connecting' (trying, backing off) or 'offline' (airplane mode). */
  connection: (state: ConnectionState) => void
  /**
   * Something went wrong that no call of the app's is waiting on: a refused envelope or record,
   * a malformed message from the relay or a member, a failed write to storage, a conversation
   * the relay refused. `err.code` says which (errors.ts), `err.conversationId` where. Nothing is
   * lost by these: what can be tried again is.
   */
  error: (err: PetrelError) => void
}

const BACKOFF_BASE_MS = 200
const BACKOFF_CAP_MS = 5_000
/** A connection that held this long was a working one: the next drop dials again soon. */
const STEADY_MS = 10_000
const HEARTBEAT_MS = 10_000
const LIVENESS_MS = 35_000
/** Room frames above this are split; leaves room for the frame header under the relay's limit. */
const FRAME_HEADROOM = 1024

export class DeviceConnection implements Multiplexer {
  state: ConnectionState = 'offline'
  maxFrameBytes = 1024 * 1024
  maxEnvelopeBytes = 256 * 1024
  private ws: WebSocket | undefined
  private authed = false
  private urlIndex = 0
  private attempts = 0
  /** Resets the backoff once a connection has held for STEADY_MS (see Ready). */
  private steadyTimer: ReturnType<typeof setTimeout> | undefined
  private retryTimer: ReturnType<typeof setTimeout> | undefined
  private beatTimer: ReturnType<typeof setInterval> | undefined
  private lastFrameAt = 0
  private wanted = true
  private browserOffline = false
  private closed = false
  private readonly sockets = new Map<string, VirtualSocket>()
  private readonly handlers = new Map<string, RoomHandler>()
  private readonly opened = new Set<string>()
  private readonly removeWindowListeners: () => void
  /** Conversations the relay says this device is a member of (after `ready`, and on each add). */
  onRooms: ((rooms: string[]) => void) | undefined
  /** The relay advertised its limits (every hello). */
  onLimits: ((maxFrameBytes: number, maxEnvelopeBytes: number) => void) | undefined
  /** What the relay of the current socket announced it understands (`RelayFeature` bits; 0 until it does). */
  private relayFeatures = 0

  constructor(
    private readonly urls: string[],
    private readonly identity: Identity,
    private readonly WS: WebSocketCtor,
    private readonly events: Emitter<ConnectionEvents>,
  ) {
    // Spread devices over a cluster's nodes; on each drop move on to the next one.
    this.urlIndex = Math.floor(Math.random() * urls.length)
    const g = globalThis as unknown as {
      addEventListener?: (t: string, l: () => void) => void
      removeEventListener?: (t: string, l: () => void) => void
      navigator?: { onLine?: boolean }
    }
    const onOffline = () => {
      // Browsers keep sockets open in emulated offline mode: close ours, and wait for `online`.
      this.browserOffline = true
      this.drop('browser offline')
    }
    const onOnline = () => {
      this.browserOffline = false
      this.attempts = 0
      this.dialNow()
    }
    if (typeof g.addEventListener === 'function' && typeof g.navigator === 'object') {
      g.addEventListener('offline', onOffline)
      g.addEventListener('online', onOnline)
      this.browserOffline = g.navigator?.onLine === false
      this.removeWindowListeners = () => {
        g.removeEventListener?.('offline', onOffline)
        g.removeEventListener?.('online', onOnline)
      }
    } else this.removeWindowListeners = () => {}
    this.dialNow()
  }

  /** Register a room; its virtual sockets open once the relay admits us. */
  register(room: string, handler: RoomHandler): void {
    this.handlers.set(room, handler)
  }

  unregister(room: string): void {
    this.handlers.delete(room)
  }

  attach(room: string, socket: VirtualSocket): void {
    const previous = this.sockets.get(room)
    if (previous && previous !== socket) previous.closed(1000, 'replaced')
    this.sockets.set(room, socket)
    if (this.authed) this.sendOpen(room)
  }

  detach(room: string, socket: VirtualSocket): void {
    if (this.sockets.get(room) !== socket) return
    this.sockets.delete(room)
    if (this.authed && this.opened.delete(room)) this.sendFrame(writeFrame({ type: FrameType.Close, room }))
  }

  /** Whether the relay of the current socket announced `feature` (wire.ts `RelayFeature`). */
  hasRelayFeature(feature: number): boolean {
    return (this.relayFeatures & feature) !== 0
  }

  /**
   * Send a sync update as `snapshot-part` (room-messages.ts) when the relay takes it and it fits
   * one frame; false when it was not sent that way (the caller sends it as it is).
   */
  sendSnapshotPart(room: string, syncUpdate: Uint8Array): boolean {
    if (!this.authed || !this.opened.has(room) || (this.relayFeatures & RelayFeature.SnapshotParts) === 0) return false
    if (syncUpdate[0] !== RoomMessage.Sync || syncUpdate[1] !== SyncStep.Update || syncUpdate.length > this.maxFrameBytes - FRAME_HEADROOM) return false
    this.sendFrame(writeRoomFrame(room, snapshotPartMessage(syncUpdate)))
    return true
  }

  sendRoom(room: string, data: Uint8Array): void {
    if (!this.authed || !this.opened.has(room)) return
    const limit = this.maxFrameBytes - FRAME_HEADROOM
    if (data.length <= limit) return this.sendFrame(writeRoomFrame(room, data))
    // A big offline outbox makes one huge sync step 2: split it into updates under the limit.
    if (data[0] !== RoomMessage.Sync || (data[1] !== SyncStep.Step2 && data[1] !== SyncStep.Update)) {
      this.events.emit('error', new PetrelError(ErrorCode.TooLarge, `a ${data.length}-byte message exceeds the relay's frame limit`))
      return
    }
    const decoder = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    const update = readVarBytesAt(decoder, 2)
    for (const piece of splitUpdate(update, limit - 16)) {
      const e = encoding.createEncoder()
      encoding.writeVarUint(e, RoomMessage.Sync)
      encoding.writeVarUint(e, SyncStep.Update)
      encoding.writeVarUint8Array(e, piece)
      this.sendFrame(writeRoomFrame(room, encoding.toUint8Array(e)))
    }
  }

  /** Airplane mode: close the socket and stay offline until `connect()`. */
  disconnect(): void {
    this.wanted = false
    this.drop('disconnected by the app')
  }

  connect(): void {
    this.wanted = true
    this.attempts = 0
    this.dialNow()
  }

  close(): void {
    this.closed = true
    this.wanted = false
    this.removeWindowListeners()
    this.drop('client closed')
    for (const s of [...this.sockets.values()]) s.closed(1000, 'client closed')
    this.sockets.clear()
  }

  private setState(state: ConnectionState): void {
    if (this.state === state) return
    this.state = state
    this.events.emit('connection', state)
  }

  private canDial(): boolean {
    return this.wanted && !this.closed && !this.browserOffline
  }

  private dialNow(): void {
    clearTimeout(this.retryTimer)
    this.retryTimer = undefined
    if (!this.canDial() || this.ws) return
    this.dial()
  }

  private scheduleRetry(): void {
    if (!this.canDial() || this.retryTimer) return
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.attempts)
    this.attempts++
    const delay = Math.random() * ceiling
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined
      if (this.canDial() && !this.ws) this.dial()
    }, delay)
  }

  private dial(): void {
    const url = this.urls[this.urlIndex % this.urls.length]!
    this.setState('connecting')
    let ws: WebSocket
    try {
      // Asking for the relay's `features` frame (wire.ts): an older relay ignores the query.
      ws = new this.WS(withFeaturesQuery(url))
    } catch (err) {
      this.events.emit('error', new PetrelError(ErrorCode.InvalidArgument, `cannot open ${url}: ${(err as Error).message}`))
      this.setState('offline')
      return this.scheduleRetry()
    }
    ws.binaryType = 'arraybuffer'
    this.ws = ws
    // Another relay (or this one, upgraded or not) may answer: it says again what it takes.
    this.relayFeatures = 0
    this.lastFrameAt = Date.now()
    ws.onmessage = (event: MessageEvent) => {
      if (this.ws !== ws) return
      this.lastFrameAt = Date.now()
      const data = event.data
      if (!(data instanceof ArrayBuffer)) return
      this.onFrame(new Uint8Array(data))
    }
    ws.onclose = (event: CloseEvent) => {
      if (this.ws !== ws) return
      this.onSocketGone(event.code, event.reason)
    }
    ws.onerror = () => {}
  }

  private onFrame(bytes: Uint8Array): void {
    let frame: Frame
    try {
      frame = readFrame(bytes)
    } catch (err) {
      // A newer relay may send frame types this client does not know: skip them, stay connected.
      if (err instanceof PetrelError && err.code === ErrorCode.Malformed && err.message.startsWith('unknown frame type')) return
      // The relay is untrusted too: report, drop, and start over on a fresh socket.
      this.events.emit('error', err instanceof PetrelError ? err : new PetrelError(ErrorCode.Malformed, String(err)))
      return this.drop('malformed frame from relay')
    }
    switch (frame.type) {
      case FrameType.Hello:
        this.maxFrameBytes = frame.maxFrameBytes
        this.maxEnvelopeBytes = frame.maxEnvelopeBytes
        this.onLimits?.(frame.maxFrameBytes, frame.maxEnvelopeBytes)
        void this.authenticate(frame.challenge)
        return
      case FrameType.Ready:
        this.authed = true
        // The backoff starts again only once the connection has held a while: a relay that
        // admits and then drops at once (its database down) was dialled every 50–400 ms, by
        // every device, for as long as the outage lasted.
        clearTimeout(this.steadyTimer)
        this.steadyTimer = setTimeout(() => {
          this.attempts = 0
        }, STEADY_MS)
        this.setState('online')
        clearInterval(this.beatTimer)
        this.beatTimer = setInterval(() => this.beat(), HEARTBEAT_MS)
        for (const room of this.sockets.keys()) this.sendOpen(room)
        return
      case FrameType.Opened: {
        this.opened.add(frame.room)
        this.sockets.get(frame.room)?.opened()
        return
      }
      case FrameType.Denied: {
        this.handlers.get(frame.room)?.denied(frame.reason, frame.message)
        const socket = this.sockets.get(frame.room)
        this.sockets.delete(frame.room)
        // Denied also once open (the relay's trouble, reason 13): not open any more.
        this.opened.delete(frame.room)
        // 44xx: the provider does not retry; the conversation decides what to do next.
        socket?.closed(4403, `${reasonName(frame.reason)}: ${frame.message}`)
        return
      }
      case FrameType.Room:
        try {
          this.sockets.get(frame.room)?.received(frame.message)
        } catch (err) {
          // Each room's handlers catch what they refuse (room-provider.ts); this is the backstop,
          // so nothing a relay or member sends throws out of the socket's handler.
          this.events.emit('error', err instanceof PetrelError ? err : new PetrelError(ErrorCode.Malformed, `room message refused: ${(err as Error)?.message ?? String(err)}`, { cause: err, conversationId: frame.room }))
        }
        return
      case FrameType.Heartbeat:
        // The device connection is alive, so is every room on it: feed each provider's watchdog.
        for (const s of this.sockets.values()) s.received(KEEPALIVE_MESSAGE)
        return
      case FrameType.Rooms:
        this.onRooms?.(frame.rooms)
        return
      case FrameType.Features:
        this.relayFeatures = frame.features
        return
      case FrameType.Notice:
        this.events.emit('error', new PetrelError(ErrorCode.Refused, `relay: ${reasonName(frame.reason)}: ${frame.message}`))
        return
      default:
        return
    }
  }

  private async authenticate(challenge: Uint8Array): Promise<void> {
    const ws = this.ws
    const signature = await signWithDomain(SignatureDomain.ConnectChallenge, this.identity.deviceSecret, challenge)
    if (this.ws !== ws) return
    this.sendFrame(writeFrame({ type: FrameType.Auth, certificate: this.identity.certificate.bytes, signature }), true)
  }

  private sendOpen(room: string): void {
    const handler = this.handlers.get(room)
    if (!handler) return
    this.sendFrame(writeFrame({ type: FrameType.Open, room, admission: handler.admission() }))
  }

  private beat(): void {
    if (Date.now() - this.lastFrameAt > LIVENESS_MS) return this.drop('relay silent')
    this.sendFrame(writeFrame({ type: FrameType.Heartbeat }))
  }

  private sendFrame(bytes: Uint8Array, beforeAuth = false): void {
    const ws = this.ws
    if (ws?.readyState !== 1 || (!this.authed && !beforeAuth)) return
    ws.send(bytes)
  }

  /** Close the real socket (if any) and reconnect unless we are meant to stay offline. */
  private drop(reason: string): void {
    const ws = this.ws
    if (ws) {
      ws.onclose = null
      ws.onmessage = null
      try {
        ws.close(1000, reason)
      } catch {
        // already closing
      }
    }
    this.onSocketGone(1000, reason)
  }

  private onSocketGone(code: number, reason: string): void {
    clearTimeout(this.steadyTimer)
    this.ws = undefined
    this.authed = false
    this.opened.clear()
    clearInterval(this.beatTimer)
    this.beatTimer = undefined
    for (const s of [...this.sockets.values()]) s.closed(1006, reason)
    this.sockets.clear()
    if (code === CloseCode.VersionMismatch || code === CloseCode.Unauthorized) {
      // Dialling again cannot help: stay offline until the app calls connect().
      this.wanted = false
      this.events.emit(
        'error',
        code === CloseCode.VersionMismatch
          ? new PetrelError(ErrorCode.VersionMismatch, `relay closed the connection: ${reason}`)
          : new PetrelError(ErrorCode.Refused, `relay refused this device: ${reason}`),
      )
    }
    if (this.urls.length > 1) this.urlIndex++
    this.setState(this.canDial() ? 'connecting' : 'offline')
    if (this.canDial()) this.scheduleRetry()
    else this.setState('offline')
  }
}

/** Read a varUint8Array at `pos` of a trusted, locally built message. */
function readVarBytesAt(bytes: Uint8Array, pos: number): Uint8Array {
  let len = 0
  let mult = 1
  for (;;) {
    const b = bytes[pos++]!
    len += (b & 0x7f) * mult
    if (b < 0x80) break
    mult *= 128
  }
  return bytes.subarray(pos, pos + len)
}
