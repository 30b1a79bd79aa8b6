/**
 * A WebSocket look-alike for one conversation, multiplexed over the device's single real
 * socket. y-websocket's provider is given a subclass of this as `WebSocketPolyfill`; it stays
 * CONNECTING until the real socket is authenticated and the relay has admitted the device to
 * the room, and closes when the real socket drops (which makes the provider resync on return).
 */
export interface Multiplexer {
  attach(room: string, socket: VirtualSocket): void
  detach(room: string, socket: VirtualSocket): void
  sendRoom(room: string, data: Uint8Array): void
}

type Listener = ((event: never) => void) | null

export class VirtualSocket {
  static readonly CONNECTING = 0
  static readonly OPEN = 1
  static readonly CLOSING = 2
  static readonly CLOSED = 3
  readonly CONNECTING = 0
  readonly OPEN = 1
  readonly CLOSING = 2
  readonly CLOSED = 3
  readyState = 0
  binaryType = 'arraybuffer'
  onopen: Listener = null
  onmessage: ((event: { data: ArrayBuffer }) => void) | null = null
  onclose: ((event: { code: number; reason: string }) => void) | null = null
  onerror: Listener = null

  constructor(
    readonly mux: Multiplexer,
    readonly room: string,
  ) {
    mux.attach(room, this)
  }

  send(data: ArrayBuffer | Uint8Array): void {
    if (this.readyState !== 1) return
    this.mux.sendRoom(this.room, data instanceof Uint8Array ? data : new Uint8Array(data))
  }

  close(code = 1000, reason = ''): void {
    if (this.readyState >= 2) return
    this.mux.detach(this.room, this)
    this.closed(code, reason)
  }

  /** Called by the multiplexer. */
  opened(): void {
    if (this.readyState !== 0) return
    this.readyState = 1
    ;(this.onopen as ((e: unknown) => void) | null)?.({})
  }

  received(message: Uint8Array): void {
    if (this.readyState !== 1) return
    const copy = message.byteOffset === 0 && message.byteLength === message.buffer.byteLength ? message : message.slice()
    this.onmessage?.({ data: copy.buffer as ArrayBuffer })
  }

  closed(code: number, reason: string): void {
    if (this.readyState === 3) return
    this.readyState = 3
    this.onclose?.({ code, reason })
  }
}
