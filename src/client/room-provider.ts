/**
 * The y-websocket provider of one conversation's outer document, on a virtual socket over the
 * device's single connection (virtual-socket.ts). y-websocket is built for one socket per
 * document with timers of its own; here the device connection watches liveness for every room,
 * so the provider's per-document timers and its process exit hook are taken away, and an idle
 * conversation costs nothing.
 */
import { WebsocketProvider } from 'y-websocket'
import type * as Y from 'yjs'
import type { DeviceConnection } from './connection.js'
import { VirtualSocket } from './virtual-socket.js'

/** What the room's socket asks of the conversation at its two moments. */
export interface RoomSocketHooks {
  /** True while a snapshot part is being written: its update goes marked (PROTOCOL §11). */
  readonly writingPart: { readonly now: boolean }
  /** Before the provider's sync step 1: the relay decides how to send the catch-up when step 1 comes. */
  beforeSyncStep1(): void
}

/**
 * A provider for `room`'s outer document `outer`, syncing over `connection`.
 *
 * @example
 * ```ts
 * const provider = createRoomProvider(ctx.connection, conv.id, outer, { writingPart, beforeSyncStep1: () => missing.askToSpareParts() })
 * provider.messageHandlers[RoomMessage.Rows] = onRows
 * ```
 */
export function createRoomProvider(connection: DeviceConnection, room: string, outer: Y.Doc, hooks: RoomSocketHooks): WebsocketProvider {
  class RoomSocket extends VirtualSocket {
    constructor() {
      super(connection, room)
    }
    override opened(): void {
      if (this.readyState === 0) hooks.beforeSyncStep1()
      super.opened()
    }
    override send(data: ArrayBuffer | Uint8Array): void {
      // A snapshot part's update goes marked, so live members that hold the history are spared it.
      if (hooks.writingPart.now && this.readyState === 1 && data instanceof Uint8Array && connection.sendSnapshotPart(room, data)) return
      super.send(data)
    }
  }
  const provider = new WebsocketProvider('petrel:', room, outer, {
    WebSocketPolyfill: RoomSocket as unknown as typeof WebSocket,
    disableBc: true,
    maxBackoffTime: 1000,
  })
  const internals = provider as unknown as { _checkInterval: ReturnType<typeof setInterval>; _exitHandler: () => void }
  clearInterval(internals._checkInterval)
  clearInterval((provider.awareness as unknown as { _checkInterval: ReturnType<typeof setInterval> })._checkInterval)
  // Awareness carries presence only once Presence sets it (presence.ts), sealed.
  provider.awareness.setLocalState(null)
  if (typeof process !== 'undefined' && typeof process.off === 'function') process.off('exit', internals._exitHandler)
  return provider
}
