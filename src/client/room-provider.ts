/**
 * The y-websocket provider of one conversation's outer document, on a virtual socket over the
 * device's single connection (virtual-socket.ts). y-websocket is built for one socket per
 * document with timers of its own; here the device connection watches liveness for every room,
 * so the provider's per-document timers and its process exit hook are taken away, and an idle
 * conversation costs nothing.
 *
 * y-websocket's handlers of the messages it knows trust the server; the relay is untrusted, so
 * they are replaced:
 * - sync (0): the relay's step 1 is answered with what it lacks, as before; its step 2 may only
 *   be the empty one that ends a catch-up (history comes only in `rows` messages, which are
 *   checked, and carry the row numbers ✓✓ depend on). Any other step 2 or update is refused:
 *   applied as it was, a relay could put a GC claim over a sender's next clocks, and the
 *   messages written there were dropped as held already, and acknowledged (✓✓) unseen.
 * - awareness (1): room-awareness.ts.
 * - query-awareness (3) and auth (2): the relay sends neither; ignored.
 * A handler's failure is reported (`malformed`) and the message dropped; none throws.
 */
import * as encoding from 'lib0/encoding'
import { writeSyncStep2 } from 'y-protocols/sync'
import { WebsocketProvider } from 'y-websocket'
import type * as Y from 'yjs'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { RoomMessage, SyncStep } from '../shared/room-messages.js'
import { StrictReader } from '../shared/wire.js'
import { parseStateVector } from '../shared/yjs-v1.js'
import type { DeviceConnection } from './connection.js'
import { ownAwarenessUpdate, takeAwareness } from './room-awareness.js'
import { VirtualSocket } from './virtual-socket.js'

/** What the room's socket asks of the conversation at its two moments. */
export interface RoomSocketHooks {
  /** True while a snapshot part is being written: its update goes marked (PROTOCOL §11). */
  readonly writingPart: { readonly now: boolean }
  /** Before the provider's sync step 1: the relay decides how to send the catch-up when step 1 comes. */
  beforeSyncStep1(): void
  /** The relay sent a message this room refuses (malformed, or outside the protocol): it was dropped. */
  malformed(err: unknown): void
  /** Others' awareness states to keep at most (room-awareness.ts). */
  awarenessLimit(): number
}

/** The empty update a catch-up ends with, in the relay's sync step 2. */
const EMPTY_UPDATE_LENGTH = 2

interface AwarenessChange {
  added: number[]
  updated: number[]
  removed: number[]
}

type Handler = (encoder: encoding.Encoder, decoder: { arr: Uint8Array; pos: number }, provider: WebsocketProvider, emitSynced: boolean) => void

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
  const handlers = provider.messageHandlers as unknown as Handler[]
  const guarded =
    (fn: Handler): Handler =>
    (encoder, decoder, p, emitSynced) => {
      try {
        fn(encoder, decoder, p, emitSynced)
      } catch (err) {
        hooks.malformed(err)
      }
    }
  handlers[RoomMessage.Sync] = guarded((encoder, decoder, p, emitSynced) => {
    const r = new StrictReader(decoder.arr.subarray(decoder.pos))
    const step = r.varUint(SyncStep.Update)
    const payload = r.varBytes(r.remaining)
    r.end()
    if (step === SyncStep.Step1) {
      parseStateVector(payload)
      // Only once the state vector parsed: a reply is sent only if the encoder holds more than its type.
      encoding.writeVarUint(encoder, RoomMessage.Sync)
      writeSyncStep2(encoder, outer, payload)
      return
    }
    if (step === SyncStep.Step2 && payload.length === EMPTY_UPDATE_LENGTH && payload[0] === 0 && payload[1] === 0) {
      if (emitSynced && !p.synced) p.synced = true
      return
    }
    throw new PetrelError(ErrorCode.Malformed, `relay sent history outside rows (sync ${step === SyncStep.Step2 ? 'step 2' : 'update'} of ${payload.length} bytes): refused`)
  })
  handlers[RoomMessage.Awareness] = guarded((_encoder, decoder, p) => {
    const r = new StrictReader(decoder.arr.subarray(decoder.pos))
    const update = r.varBytes(r.remaining)
    r.end()
    takeAwareness(p.awareness, update, p, hooks.awarenessLimit())
  })
  handlers[RoomMessage.QueryAwareness] = () => {}
  handlers[RoomMessage.Auth] = () => {}
  const awarenessInternals = provider as unknown as { _awarenessUpdateHandler: (change: AwarenessChange, origin: unknown) => void }
  provider.awareness.off('update', awarenessInternals._awarenessUpdateHandler)
  // Replaced where destroy() looks for it, so it is taken off there.
  awarenessInternals._awarenessUpdateHandler = ({ added, updated, removed }) => {
    const update = ownAwarenessUpdate(provider.awareness, [...added, ...updated, ...removed])
    if (!update || !provider.wsconnected || !provider.ws) return
    const e = encoding.createEncoder()
    encoding.writeVarUint(e, RoomMessage.Awareness)
    encoding.writeVarUint8Array(e, update)
    provider.ws.send(encoding.toUint8Array(e))
  }
  provider.awareness.on('update', awarenessInternals._awarenessUpdateHandler)
  if (typeof process !== 'undefined' && typeof process.off === 'function') process.off('exit', internals._exitHandler)
  return provider
}
