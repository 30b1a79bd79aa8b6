/**
 * Authorship rules for inner updates, applied by every receiver alike and in relay order, so
 * devices never diverge. A member's validly signed update is still rejected when it
 *   - uses an inner Yjs client id already bound to another device (first use in relay order wins),
 *   - writes or overwrites a key of `messages`, `messageBatches` or `profiles` owned by another
 *     user (message and batch keys start with their author's userId; profile keys are userIds,
 *     or a userId • '@' • epoch: restated-context.ts),
 *   - deletes such an entry, or deletes clocks the receiver has never seen,
 *   - continues (as its origin) content the receiver has never seen, unless a device of the
 *     sender's own person wrote it: such an item takes its entry from that origin, and Yjs keeps
 *     it until the origin comes, so continuing another member's next clock would land it in
 *     their entry then. On a 'from-join' device the history it can never read is filled later
 *     (lost-history-fill.ts); a refused item there was lost anyway, Yjs drops an item whose
 *     origin is a fill.
 * Our strict V1 parser runs first, so crafted updates (huge clocks, duplicate groups) are
 * refused before Yjs sees them: the memory budget. Sizes are bounded by the envelope limit.
 */
import * as Y from 'yjs'
import { findRun } from '../shared/clock-ranges.js'
import { parseUpdate } from '../shared/yjs-v1.js'

export const INNER_MESSAGES = 'messages'
export const INNER_PROFILES = 'profiles'
export const INNER_META = 'meta'
/** Batch signatures of messages sent together (message-signature.ts), keyed like messages. */
export const INNER_MESSAGE_BATCHES = 'messageBatches'

/** Clock budget: an update may not claim more than this many clocks past what we hold. */
const MAX_CLOCK_AHEAD = 1_000_000

/**
 * `bind`: client ids this update binds to the sender; `messageKeys`: `messages` entries it
 * writes; `ownClient`: refused because it writes from this document's own client id.
 */
export type GuardResult = { ok: true; bind: number[]; messageKeys: string[] } | { ok: false; reason: string; ownClient?: true }

/**
 * Whether `userId` owns `key` of a protected root map: a profile key is its owner's userId; a
 * message key is owned by what precedes its first '.' (`key.slice(0, key.indexOf('.'))`, the
 * rule every receiver applies), checked without a substring per message. A userId (base64url)
 * has no '.', so a key of `userId.` + anything is theirs; a key with no '.' at all is owned by
 * all of it but its last character, as `slice(0, -1)` has always said.
 */
export const ownedBy = (root: string, key: string, userId: string): boolean => {
  // A profile's entries are its owner's userId, and that followed by '@' and an epoch: the
  // name said again for newcomers of that epoch (restated-context.ts).
  if (root === INNER_PROFILES) return key.startsWith(userId) && (key.length === userId.length || key.charCodeAt(userId.length) === 64)
  if (key.charCodeAt(userId.length) === 46) return key.startsWith(userId)
  return key.length === userId.length + 1 && key.indexOf('.') === -1 && key.startsWith(userId)
}

export function checkInnerUpdate(
  doc: Y.Doc,
  update: Uint8Array,
  sender: { deviceId: string; userId: string },
  bindings: ReadonlyMap<number, string>,
  /** The person a device belongs to, for every device ever admitted (`MembershipState.everDevices`). */
  deviceOwner: (deviceId: string) => string | undefined = () => undefined,
): GuardResult {
  let parsed: ReturnType<typeof parseUpdate>
  try {
    parsed = parseUpdate(update, { maxBytes: update.length })
  } catch (err) {
    return { ok: false, reason: `malformed inner update: ${(err as Error).message}` }
  }
  const bind: number[] = []
  const messageKeys: string[] = []
  const protectedRoots = new Set([INNER_MESSAGES, INNER_MESSAGE_BATCHES, INNER_PROFILES])
  // Items of this update by client, as clock ranges, to resolve origins that point inside the
  // update itself. Only an item without a parent of its own needs that; most updates have none.
  // Ranges, not one entry per clock: a deleted item claims up to a million clocks in 3 bytes.
  let needLocal = false
  for (const group of parsed.groups) for (const s of group.structs) if (s.kind === 'item' && s.parentRoot === undefined) needLocal = true
  const local = new Map<number, LocalItem[]>()
  const writers = new Set(parsed.groups.map((g) => g.client))
  // Whether `client` writes for this sender's person: an entry it continues was theirs to write.
  const senders = (client: number): boolean => {
    if (writers.has(client)) return true
    const device = bindings.get(client)
    return device !== undefined && (device === sender.deviceId || deviceOwner(device) === sender.userId)
  }
  for (const group of parsed.groups) {
    const owner = bindings.get(group.client)
    if (owner !== undefined && owner !== sender.deviceId) return { ok: false, reason: `client id ${group.client} belongs to another device` }
    if (owner === undefined) {
      if (group.client === doc.clientID) return { ok: false, reason: 'update reuses this device’s own client id', ownClient: true }
      bind.push(group.client)
    }
    const have = Y.getState(doc.store, group.client)
    for (const s of group.structs) {
      if (s.clock + s.len > have + MAX_CLOCK_AHEAD) return { ok: false, reason: 'update claims too many clocks' }
      if (s.kind !== 'item') continue
      let root = s.parentRoot
      let key = s.key
      const ref = s.origin ?? s.rightOrigin
      if (ref && root === undefined) {
        const inside = findRun(local.get(ref.client), ref.clock)
        const found = inside ?? findItem(doc, ref.client, ref.clock)
        if (found) ({ root, key } = found)
        // An item with no parent of its own takes its origin's entry, and Yjs keeps one whose
        // origin it lacks until that origin comes: continuing another member's next clock
        // would land in their entry then. Only what this person's own devices wrote may be
        // continued unseen (their first write of it had its entry checked).
        else if (!senders(ref.client)) return { ok: false, reason: 'continues content this device has not seen, written by another member' }
      }
      if (needLocal) {
        let items = local.get(group.client)
        if (!items) {
          items = []
          local.set(group.client, items)
        }
        items.push({ clock: s.clock, len: s.len, root, key })
      }
      if (root !== undefined && protectedRoots.has(root)) {
        if (key === undefined || !ownedBy(root, key, sender.userId)) {
          return { ok: false, reason: `writes ${root} entry owned by another member` }
        }
        if (root === INNER_MESSAGES) messageKeys.push(key)
      }
    }
  }
  for (const ds of parsed.deleteSet) {
    const known = Y.getState(doc.store, ds.client)
    const ownClient = bindings.get(ds.client) === sender.deviceId || bind.includes(ds.client)
    for (const [clock, len] of ds.ranges) {
      if (clock + len > known && !ownClient) return { ok: false, reason: 'deletes content this device has never seen' }
      for (let c = clock; c < Math.min(clock + len, known); ) {
        const found = findItem(doc, ds.client, c)
        if (!found) break
        if (found.root !== undefined && protectedRoots.has(found.root) && found.key !== undefined) {
          if (!ownedBy(found.root, found.key, sender.userId)) return { ok: false, reason: `deletes ${found.root} entry owned by another member` }
        }
        c = found.end
      }
    }
  }
  return { ok: true, bind, messageKeys }
}

/** An item of the update being checked: its clocks and the entry it writes (when known); found with `findRun` (its client's structs come in clock order). */
interface LocalItem {
  clock: number
  len: number
  root?: string
  key?: string
}

/** The root name and key of the item holding (client, clock), if we have it. */
function findItem(doc: Y.Doc, client: number, clock: number): { root?: string; key?: string; end: number } | undefined {
  const structs = doc.store.clients.get(client)
  if (!structs || structs.length === 0) return undefined
  const last = structs[structs.length - 1]!
  if (clock >= last.id.clock + last.length) return undefined
  const struct = structs[Y.findIndexSS(structs, clock)]!
  const end = struct.id.clock + struct.length
  if (!(struct instanceof Y.Item)) return { end }
  const parent = struct.parent
  if (!(parent instanceof Y.AbstractType) || parent._item !== null) return { end }
  const root = rootName(doc, parent)
  return { root, key: struct.parentSub ?? undefined, end }
}

function rootName(doc: Y.Doc, type: Y.AbstractType<unknown>): string | undefined {
  for (const [name, t] of doc.share) if (t === type) return name
  return undefined
}
