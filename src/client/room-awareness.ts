/**
 * A room's awareness (presence: who is typing, presence.ts) as it comes from the relay and goes
 * to it. Awareness is the one room message another member writes that reaches this device
 * without passing the relay's checks or ours, so y-websocket's own handling, which trusts it,
 * is replaced:
 *
 * - a message is read strictly before y-protocols sees it: at most MAX_ENTRIES entries, each
 *   state at most MAX_STATE_BYTES of JSON that is an object or null. Anything else is refused
 *   whole, as malformed. (A state that was not JSON threw out of the socket's handler: one
 *   member's message crashed every other member's Node process.)
 * - others' states are kept for at most STALE_MS without a refresh, and at most `limit()` of
 *   them, the least recently refreshed dropped first; their clocks go with them. (y-websocket's
 *   expiry timer is off, room-provider.ts: every client id a member ever claimed was kept.)
 * - an entry for this device's own id is left out, and others' clocks are not trusted: each
 *   update is its id's next, in the order the relay passes them on (another member claiming an
 *   id with a clock near 2^53 replaced or silenced its owner's state for good);
 * - only this device's own state is sent. (y-websocket sends every change it applies, others'
 *   too: each state reached the relay again from every member that received it.)
 *
 * ```
 * awareness message := varUint 1 • varUint8Array update          (y-websocket's, unchanged)
 * update            := varUint n • { varUint clientId • varUint clock • varString stateJson }{n}
 * ```
 */
import * as encoding from 'lib0/encoding'
import { applyAwarenessUpdate, type Awareness, encodeAwarenessUpdate, removeAwarenessStates } from 'y-protocols/awareness'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { StrictReader } from '../shared/wire.js'

/** Entries one message may carry: a device sends its own state (y-websocket's first message may add its removal). */
export const MAX_ENTRIES = 4
/** A state's JSON at most: a sealed typing flag is ~150 bytes (presence.ts). */
export const MAX_STATE_BYTES = 1024
/** Others' states not refreshed for this long are dropped (y-protocols' own outdated timeout). */
export const STALE_MS = 30_000

/**
 * Read an awareness update from the relay strictly, apply it, and keep others' states within
 * bounds. Throws PetrelError(Malformed) and applies nothing if the update is not well formed.
 *
 * @example
 * ```ts
 * takeAwareness(provider.awareness, update, provider, 2 * memberDevices + 8)
 * ```
 */
export function takeAwareness(awareness: Awareness, update: Uint8Array, origin: unknown, limit: number, now = Date.now()): void {
  const r = new StrictReader(update)
  const n = r.varUint(MAX_ENTRIES)
  const entries: Array<{ id: number; clock: number; json: string }> = []
  for (let i = 0; i < n; i++) {
    const id = r.varUint()
    r.varUint() // the sender's clock: not trusted (below)
    const json = r.varString(MAX_STATE_BYTES)
    let state: unknown
    try {
      state = JSON.parse(json)
    } catch {
      throw new PetrelError(ErrorCode.Malformed, 'awareness state is not JSON')
    }
    if (state !== null && (typeof state !== 'object' || Array.isArray(state))) throw new PetrelError(ErrorCode.Malformed, 'awareness state is not an object')
    // Not ours to set: another member could replace this device's state, or silence it, with a
    // clock from far ahead (every later clock of its own then lost to it).
    if (id === awareness.clientID) continue
    // The sender's clock is not trusted either: a claim far ahead would outrank the id's owner
    // for good. Each update counts as the id's next, in the order the relay passes them on.
    entries.push({ id, clock: (awareness.meta.get(id)?.clock ?? 0) + 1, json })
  }
  r.end()
  if (entries.length === 0) return
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, entries.length)
  for (const entry of entries) {
    encoding.writeVarUint(e, entry.id)
    encoding.writeVarUint(e, entry.clock)
    encoding.writeVarString(e, entry.json)
  }
  applyAwarenessUpdate(awareness, encoding.toUint8Array(e), origin)
  keepWithin(awareness, limit, now)
}

/**
 * Drop others' states (and the clocks of ids without one) that are stale, then the least
 * recently refreshed beyond `limit`.
 */
function keepWithin(awareness: Awareness, limit: number, now: number): void {
  const own = awareness.clientID
  const { meta, states } = awareness
  // Nothing to scan while the room holds few ids and none can have gone stale since the last scan.
  if (meta.size <= limit + 1 && now - (swept.get(awareness) ?? 0) < STALE_MS / 2) return
  swept.set(awareness, now)
  const drop: number[] = []
  const kept: Array<[number, number]> = []
  for (const [id, m] of meta) {
    if (id === own) continue
    if (now - m.lastUpdated >= STALE_MS || !states.has(id)) drop.push(id)
    else kept.push([id, m.lastUpdated])
  }
  if (kept.length > limit) {
    kept.sort((a, b) => a[1] - b[1])
    for (const [id] of kept.slice(0, kept.length - limit)) drop.push(id)
  }
  if (drop.length === 0) return
  removeAwarenessStates(awareness, drop, 'petrel:expired')
  for (const id of drop) meta.delete(id)
}

/** When each awareness was last scanned (keepWithin). */
const swept = new WeakMap<Awareness, number>()

/**
 * The awareness message to send after `changed` ids changed, if this device's own state is one
 * of them; others' states are theirs to send.
 */
export function ownAwarenessUpdate(awareness: Awareness, changed: readonly number[]): Uint8Array | undefined {
  return changed.includes(awareness.clientID) ? encodeAwarenessUpdate(awareness, [awareness.clientID]) : undefined
}
