/**
 * Membership as a fold over signed records. The relay applies them in the order it admits
 * them; clients refold every record they hold in row (relay) order, genesis first and their
 * own unacknowledged records last (only the relay counts invite uses, atomically). Both run
 * this same code, so they agree on who is in a conversation; a record not properly signed or
 * not authorised is ignored everywhere.
 */
import { constantTimeEqual, isSmallOrderAgreementKey, toBase64Url } from './crypto/index.js'
import { isPetrelError } from './errors.js'
import {
  type DeviceCertificate,
  readAddBody,
  readSnapshotBody,
  readUnlinkBody,
  verifyCertificate,
  type InviteBody,
  readGenesisBody,
  readInviteBody,
  readEpochBody,
  readJoinBody,
  readMemberChangeBody,
  readRevokeBody,
  RecordKind,
  roomIdFor,
  type SignedRecord,
  verifyRecordSignature,
} from './records.js'

export type Role = 'admin' | 'member'

export interface MemberState {
  userId: string
  role: Role
  /** When they joined, by the clock of whoever wrote the record (the joiner's, or the adder's). */
  joinedAt: number
  /**
   * The relay seq of the record that made them a member (devices only, set as they fold;
   * undefined for a record the relay has not acknowledged yet). Relay order, not clocks,
   * says whom a message was sent to: compared with a joiner's clock, a message sent after they
   * joined by a sender whose clock ran behind theirs counted them out, and stayed ✓ for good.
   */
  joinedSeq?: number
  devices: Map<string, DeviceCertificate>
}

/** The person a genesis, join or add record makes a member (undefined for other kinds, or a body that does not parse). */
export function recordMember(rec: SignedRecord): string | undefined {
  try {
    if (rec.kind === RecordKind.Genesis) return rec.signer ? toBase64Url(rec.signer.userPub) : undefined
    if (rec.kind === RecordKind.Join) return toBase64Url(readJoinBody(rec.body).joiner.userPub)
    if (rec.kind === RecordKind.Add) return toBase64Url(readAddBody(rec.body).userPub)
  } catch {
    return undefined
  }
  return undefined
}

export interface InviteState extends InviteBody {
  issuer: string
  uses: number
  /** Its place among the invites in record order (1 for the first): see `removedAt`. */
  order: number
  /** The device that signed it (base64url): the one that gives its joiners the current key. */
  issuerDevice: string
  /** The epoch when it was applied: its token carries the keys up to that one (see devicesToWelcome). */
  epoch: number
}

export interface EpochState {
  epoch: number
  keyCheck: Uint8Array
  /** Who started it (userId) and the wrapped keys, devicePub (base64url) → wrapped key. */
  by: string
  wrapped: Map<string, Uint8Array>
}

export interface MembershipState {
  room: string
  creator: string | undefined
  members: Map<string, MemberState>
  invites: Map<string, InviteState>
  /** devicePub (base64url) → userId, for current members */
  devices: Map<string, string>
  /** Every device ever admitted → userId: authors of earlier messages stay known after they leave. */
  everDevices: Map<string, string>
  /** invitePub (base64url) of revoked invites. */
  revoked: Set<string>
  /**
   * userId → when they were removed (the remover's clock) and how many invites were known then.
   * Neither an invite made before that nor one applied before it brings them back: the clocks
   * of two admins' devices differ, and a removal dated before an invite by a slow clock let the
   * removed member back in with it.
   */
  removedAt: Map<string, { at: number; invites: number; epoch: number; left?: true }>
  /** Invites applied so far, in record order (`InviteState.order`). */
  invitesApplied: number
  /** The current key epoch (0 from the genesis) and the epoch records after it. */
  epoch: number
  epochs: Map<number, EpochState>
  /** Someone left or was removed since the current epoch began: the key must change. */
  rotationDue: boolean
  /** Devices unlinked (device → userId of whoever signed the unlink): never admitted again. */
  removedDevices: Map<string, string>
  /** devicePub (base64url) → key bundles given to it by add records, in record order. */
  bundles: Map<string, Uint8Array[]>
  /**
   * devicePub (base64url) → the invite (invitePub, base64url) it joined by and the epoch current
   * when it joined (devices only, not the relay).
   */
  joinedVia: Map<string, { invite: string; epoch: number }>
  /** devicePub (base64url) → the epoch of the latest add record that gave it keys (devices only). */
  welcomed: Map<string, number>
  /** The latest snapshot: rows up to `coversSeq` may be compacted away. */
  snapshot: { coversSeq: number; snapshotId: Uint8Array; parts: number; by: string } | undefined
}

/**
 * Shared by every state until its first entry. Most conversations never revoke an invite,
 * remove anyone, unlink a device or add one by record, and start without key changes; an
 * empty Map or Set costs ~190 bytes, and the relay keeps a state per open room. `writable()` swaps in a real one before the
 * first write; a write that skips it throws rather than leaking into every other state.
 */
class SharedEmptyMap<K, V> extends Map<K, V> {
  override set(): this {
    throw new Error('membership: a shared empty map was written; use writable()')
  }
}
class SharedEmptySet<T> extends Set<T> {
  override add(): this {
    throw new Error('membership: a shared empty set was written; use writable()')
  }
}
const EMPTY_MAP: Map<never, never> = new SharedEmptyMap()
const EMPTY_SET: Set<never> = new SharedEmptySet()

type LazyMapField = 'invites' | 'removedAt' | 'removedDevices' | 'bundles' | 'epochs' | 'joinedVia' | 'welcomed'

function writable<F extends LazyMapField>(s: MembershipState, field: F): MembershipState[F] {
  if ((s[field] as Map<unknown, unknown>) === EMPTY_MAP) s[field] = new Map() as MembershipState[F]
  return s[field]
}

function writableRevoked(s: MembershipState): Set<string> {
  if (s.revoked === EMPTY_SET) s.revoked = new Set()
  return s.revoked
}

export const emptyMembership = (room: string): MembershipState => ({
  room,
  creator: undefined,
  members: new Map(),
  invites: EMPTY_MAP,
  devices: new Map(),
  everDevices: new Map(),
  revoked: EMPTY_SET,
  removedAt: EMPTY_MAP,
  invitesApplied: 0,
  epoch: 0,
  epochs: EMPTY_MAP,
  rotationDue: false,
  removedDevices: EMPTY_MAP,
  bundles: EMPTY_MAP,
  joinedVia: EMPTY_MAP,
  welcomed: EMPTY_MAP,
  snapshot: undefined,
})

export type ApplyResult = { ok: true } | { ok: false; reason: string }

/**
 * A device whose agreement key is of small order is never admitted: no key can be wrapped to
 * it, and an epoch record must wrap the key for every member device, so one such device would
 * make every later rotation fail until it was removed.
 */
export const UNUSABLE_AGREEMENT_KEY = 'device agreement key is of small order'

/** Devices one person may have in a conversation: as many as one add record carries. */
export const MAX_MEMBER_DEVICES = 16
/**
 * Devices a conversation may hold. Every epoch record wraps the key for each of them (~106
 * bytes a device): 2,048 take ~220 KB, within a frame and the parser's 4,096. Past either, no
 * rotation could be written, and as nothing is sealed while a removal waits for the key to
 * change, every member's sends would stop after the next removal.
 */
export const MAX_CONVERSATION_DEVICES = 2048
/** Why a join or add is refused past {@link MAX_MEMBER_DEVICES} or {@link MAX_CONVERSATION_DEVICES}. */
export const TOO_MANY_DEVICES = 'too many devices'

/**
 * Whether adding `devices` (base64url) to `member` (undefined: a new member) would pass a
 * device cap; devices it has already do not count. The relay's rule as it admits and takes
 * uploads (ApplyOptions.live): histories stored before it fold as they did.
 */
export function deviceCapBars(s: MembershipState, member: MemberState | undefined, devices: readonly string[]): string | undefined {
  const fresh = devices.filter((d) => !member?.devices.has(d)).length
  if (fresh === 0) return undefined
  if ((member?.devices.size ?? 0) + fresh > MAX_MEMBER_DEVICES) return `${TOO_MANY_DEVICES}: a person has at most ${MAX_MEMBER_DEVICES} in a conversation`
  if (s.devices.size + fresh > MAX_CONVERSATION_DEVICES) return `${TOO_MANY_DEVICES}: a conversation holds at most ${MAX_CONVERSATION_DEVICES}`
  return undefined
}

const addDevice = (s: MembershipState, member: MemberState, cert: DeviceCertificate) => {
  const id = toBase64Url(cert.devicePub)
  member.devices.set(id, cert)
  s.devices.set(id, member.userId)
  s.everDevices.set(id, member.userId)
}

/**
 * Apply one record. `now` is the time against which invite expiry is judged: the relay
 * passes its clock; clients pass the join's claimed time (the relay already refused late
 * joins, and clients must agree with each other, not with their own clocks).
 */
export interface ApplyOptions {
  /** The time invite expiry is judged against (the relay's clock; clients use the join's). */
  now?: number
  /**
   * The relay's stricter view: it counts invite uses (clients receive joins it already
   * counted) and requires an epoch to wrap its key for exactly the member devices (clients
   * fold records in row order, where a join the relay admitted earlier may come later).
   */
  relay?: boolean
  /**
   * The relay taking this record now, from an upload (not reading stored ones back): rules
   * added since records were first stored apply only here. A record they refuse is never
   * stored, so devices (which fold only what the relay kept) need not know them, and histories
   * stored before fold as they always did.
   */
  live?: boolean
  /**
   * The caller verified this record's signature before, over these very bytes (a client
   * refolding its log): the signature is not checked again. Every other rule still applies.
   */
  signatureChecked?: boolean
}

export async function applyRecord(s: MembershipState, rec: SignedRecord, options: ApplyOptions = {}): Promise<ApplyResult> {
  // A signed record whose body does not parse is refused like any other: thrown, it stopped a
  // relay part-way through an upload (records before it applied in memory, none stored) and a
  // device's fold for good. Each kind reads its body before it changes anything.
  try {
    return await applyParsedRecord(s, rec, options)
  } catch (err) {
    if (isPetrelError(err)) return { ok: false, reason: `malformed record: ${err.message}` }
    throw err
  }
}

async function applyParsedRecord(s: MembershipState, rec: SignedRecord, options: ApplyOptions): Promise<ApplyResult> {
  const now = options.now
  const countUses = options.relay ?? false
  // First, before any other rule: any outcome but 'bad signature' means the signature verified
  // (MembershipBook trusts those bytes again on its next fold). Keep it first.
  if (!options.signatureChecked && !(await verifyRecordSignature(rec))) return { ok: false, reason: 'bad signature' }
  switch (rec.kind) {
    case RecordKind.Genesis: {
      const g = readGenesisBody(rec.body)
      const signer = rec.signer!
      if (s.creator !== undefined) return { ok: false, reason: 'genesis already applied' }
      if (g.room !== s.room || roomIdFor(g.nonce, signer.userPub) !== s.room) return { ok: false, reason: 'genesis does not match room' }
      if (isSmallOrderAgreementKey(signer.agreementPub)) return { ok: false, reason: UNUSABLE_AGREEMENT_KEY }
      const userId = toBase64Url(signer.userPub)
      const member: MemberState = { userId, role: 'admin', joinedAt: g.createdAt, devices: new Map() }
      s.creator = userId
      s.members.set(userId, member)
      addDevice(s, member, signer)
      return { ok: true }
    }
    case RecordKind.Invite: {
      const inv = readInviteBody(rec.body)
      const issuer = toBase64Url(rec.signer!.userPub)
      if (inv.room !== s.room) return { ok: false, reason: 'invite for another room' }
      if (s.members.get(issuer)?.role !== 'admin') return { ok: false, reason: 'invite not issued by an admin' }
      if (s.devices.get(toBase64Url(rec.signer!.devicePub)) !== issuer) return { ok: false, reason: 'invite signed by an unknown device' }
      const key = toBase64Url(inv.invitePub)
      if (!s.invites.has(key)) writable(s, 'invites').set(key, { ...inv, issuer, uses: 0, order: ++s.invitesApplied, issuerDevice: toBase64Url(rec.signer!.devicePub), epoch: s.epoch })
      return { ok: true }
    }
    case RecordKind.Join: {
      const j = readJoinBody(rec.body)
      if (j.room !== s.room) return { ok: false, reason: 'join for another room' }
      const inv = s.invites.get(toBase64Url(j.invitePub))
      if (!inv) return { ok: false, reason: 'unknown invite' }
      if (s.revoked.has(toBase64Url(j.invitePub))) return { ok: false, reason: 'invite revoked' }
      const at = now ?? j.joinedAt
      if (inv.expiresAt !== 0 && at > inv.expiresAt) return { ok: false, reason: 'invite expired' }
      if (s.removedDevices.has(toBase64Url(j.joiner.devicePub))) return { ok: false, reason: 'device was unlinked' }
      if (isSmallOrderAgreementKey(j.joiner.agreementPub)) return { ok: false, reason: UNUSABLE_AGREEMENT_KEY }
      const userId = toBase64Url(j.joiner.userPub)
      const knownAs = s.everDevices.get(toBase64Url(j.joiner.devicePub))
      if (knownAs !== undefined && knownAs !== userId) return { ok: false, reason: "another person's device" }
      if (removalBars(s, userId, inv, options.live === true)) return { ok: false, reason: REMOVED_MEMBER }
      const existing = s.members.get(userId)
      const capped = options.live ? deviceCapBars(s, existing, [toBase64Url(j.joiner.devicePub)]) : undefined
      if (capped) return { ok: false, reason: capped }
      if (existing) {
        if (!options.relay) writable(s, 'joinedVia').set(toBase64Url(j.joiner.devicePub), { invite: toBase64Url(j.invitePub), epoch: s.epoch })
        addDevice(s, existing, j.joiner)
        return { ok: true }
      }
      if (countUses && inv.maxUses !== 0 && inv.uses >= inv.maxUses) return { ok: false, reason: 'invite used up' }
      inv.uses++
      const member: MemberState = { userId, role: 'member', joinedAt: j.joinedAt, devices: new Map() }
      s.members.set(userId, member)
      if (!options.relay) writable(s, 'joinedVia').set(toBase64Url(j.joiner.devicePub), { invite: toBase64Url(j.invitePub), epoch: s.epoch })
      addDevice(s, member, j.joiner)
      return { ok: true }
    }
    case RecordKind.Remove:
    case RecordKind.Promote:
    case RecordKind.Leave: {
      const b = readMemberChangeBody(rec.body)
      if (b.room !== s.room) return { ok: false, reason: 'record for another room' }
      const signer = signerMember(s, rec)
      if (!signer) return { ok: false, reason: 'signed by a device that is not a member' }
      const target = toBase64Url(b.userPub)
      const member = s.members.get(target)
      if (!member) return { ok: false, reason: 'not a member' }
      if (rec.kind === RecordKind.Leave) {
        if (signer.userId !== target) return { ok: false, reason: 'only members themselves can leave' }
      } else {
        if (signer.role !== 'admin') return { ok: false, reason: 'only admins change membership' }
        if (rec.kind === RecordKind.Remove && target === signer.userId) return { ok: false, reason: 'admins leave rather than remove themselves' }
      }
      if (rec.kind === RecordKind.Promote) {
        member.role = 'admin'
        return { ok: true }
      }
      s.members.delete(target)
      for (const device of member.devices.keys()) s.devices.delete(device)
      // `left`: they went themselves (their devices say so quietly, not as a refusal).
      const removal = { at: Math.max(b.at, s.removedAt.get(target)?.at ?? 0), invites: s.invitesApplied, epoch: s.epoch }
      writable(s, 'removedAt').set(target, rec.kind === RecordKind.Leave ? { ...removal, left: true } : removal)
      s.rotationDue = true
      return { ok: true }
    }
    case RecordKind.Revoke: {
      const b = readRevokeBody(rec.body)
      if (b.room !== s.room) return { ok: false, reason: 'record for another room' }
      if (signerMember(s, rec)?.role !== 'admin') return { ok: false, reason: 'only admins revoke invites' }
      writableRevoked(s).add(toBase64Url(b.invitePub))
      return { ok: true }
    }
    case RecordKind.Epoch: {
      const b = readEpochBody(rec.body)
      if (b.room !== s.room) return { ok: false, reason: 'record for another room' }
      const signer = signerMember(s, rec)
      if (!signer) return { ok: false, reason: 'signed by a device that is not a member' }
      if (b.epoch !== s.epoch + 1) return { ok: false, reason: `stale epoch ${b.epoch} (current ${s.epoch})` }
      // Every member device must get the key — and, at the relay, nobody else.
      for (const device of s.devices.keys()) if (!b.wrapped.has(device)) return { ok: false, reason: 'epoch leaves a member device without the key' }
      if (options.relay) for (const device of b.wrapped.keys()) if (!s.devices.has(device)) return { ok: false, reason: 'epoch wraps its key for a non-member' }
      s.epoch = b.epoch
      s.rotationDue = false
      writable(s, 'epochs').set(b.epoch, { epoch: b.epoch, keyCheck: b.keyCheck, by: signer.userId, wrapped: b.wrapped })
      return { ok: true }
    }
    case RecordKind.Add: {
      const b = readAddBody(rec.body)
      if (b.room !== s.room) return { ok: false, reason: 'record for another room' }
      const signer = signerMember(s, rec)
      if (!signer) return { ok: false, reason: 'signed by a device that is not a member' }
      const userId = toBase64Url(b.userPub)
      // A person links their own devices; only admins add other people (or their devices).
      if (signer.userId !== userId && signer.role !== 'admin') return { ok: false, reason: 'only admins add people' }
      for (const d of b.devices) {
        if (!constantTimeEqual(d.certificate.userPub, b.userPub)) return { ok: false, reason: "certificate of another person's device" }
        if (s.removedDevices.has(toBase64Url(d.certificate.devicePub))) return { ok: false, reason: 'device was unlinked' }
        if (isSmallOrderAgreementKey(d.certificate.agreementPub)) return { ok: false, reason: UNUSABLE_AGREEMENT_KEY }
        // A device key belongs to one person: anyone can sign a certificate for someone else's.
        const knownAs = s.everDevices.get(toBase64Url(d.certificate.devicePub))
        if (knownAs !== undefined && knownAs !== userId) return { ok: false, reason: "another person's device" }
        if (!(await verifyCertificate(d.certificate))) return { ok: false, reason: 'device certificate not signed by its person' }
      }
      if (options.relay) {
        // The relay's order decides: an add raced by a new epoch gave its devices an old key.
        if (b.epoch !== s.epoch) return { ok: false, reason: `stale epoch ${b.epoch} (current ${s.epoch})` }
        const expected = s.epochs.get(b.epoch)?.keyCheck
        if (expected && !constantTimeEqual(expected, b.keyCheck)) return { ok: false, reason: 'add names another key for the epoch' }
      }
      let member = s.members.get(userId)
      // Removed (or left) while this epoch's key was current: it is the key they hold, and an
      // add under it (a device's automatic welcome written before it folded the removal, say)
      // would let them back in on the key they were removed from. Added again once it changed.
      // The relay's rule for uploads only (see ApplyOptions.live): folded from stored records,
      // histories accepted before it would end elsewhere than the relay that accepted them.
      if (options.live && !member && s.removedAt.get(userId)?.epoch === b.epoch) return { ok: false, reason: 'removed in this epoch; add them again once the key changed' }
      const capped = options.live ? deviceCapBars(s, member, b.devices.map((d) => toBase64Url(d.certificate.devicePub))) : undefined
      if (capped) return { ok: false, reason: capped }
      if (!member) {
        member = { userId, role: 'member', joinedAt: b.at, devices: new Map() }
        s.members.set(userId, member)
      }
      for (const d of b.devices) {
        addDevice(s, member, d.certificate)
        const id = toBase64Url(d.certificate.devicePub)
        const list = s.bundles.get(id)
        if (list) list.push(d.keyBundle)
        else writable(s, 'bundles').set(id, [d.keyBundle])
        if (!options.relay) writable(s, 'welcomed').set(id, b.epoch)
      }
      return { ok: true }
    }
    case RecordKind.Unlink: {
      const b = readUnlinkBody(rec.body)
      if (b.room !== s.room) return { ok: false, reason: 'record for another room' }
      const signer = signerMember(s, rec)
      if (!signer) return { ok: false, reason: 'signed by a device that is not a member' }
      const device = toBase64Url(b.devicePub)
      const owner = s.devices.get(device)
      const member = owner === undefined ? undefined : s.members.get(owner)
      if (!member?.devices.has(device)) return { ok: false, reason: 'not a member device' }
      if (signer.userId !== member.userId && signer.role !== 'admin') return { ok: false, reason: "only the person or an admin unlinks a person's device" }
      if (member.devices.size === 1) return { ok: false, reason: "a person's last device leaves rather than unlinks" }
      member.devices.delete(device)
      s.devices.delete(device)
      writable(s, 'removedDevices').set(device, signer.userId)
      s.rotationDue = true
      return { ok: true }
    }
    case RecordKind.Snapshot: {
      const b = readSnapshotBody(rec.body)
      if (b.room !== s.room) return { ok: false, reason: 'record for another room' }
      const signer = signerMember(s, rec)
      if (!signer) return { ok: false, reason: 'signed by a device that is not a member' }
      if (b.parts === 0) return { ok: false, reason: 'snapshot without parts' }
      if (!s.snapshot || b.coversSeq > s.snapshot.coversSeq) s.snapshot = { coversSeq: b.coversSeq, snapshotId: b.snapshotId, parts: b.parts, by: signer.userId }
      return { ok: true }
    }
  }
}

/** The member whose device signed a record (undefined for an unknown device or non-member). */
function signerMember(s: MembershipState, rec: SignedRecord): MemberState | undefined {
  if (!rec.signer) return undefined
  const userId = s.devices.get(toBase64Url(rec.signer.devicePub))
  if (userId === undefined || userId !== toBase64Url(rec.signer.userPub)) return undefined
  return s.members.get(userId)
}

/** The member user a device belongs to, when the device is known and its user is a member. */
export const memberOfDevice = (s: MembershipState, devicePub: Uint8Array): string | undefined => {
  const user = s.devices.get(toBase64Url(devicePub))
  return user !== undefined && s.members.has(user) ? user : undefined
}

/** Why a join is refused when its person was removed after the invite (`removalBars`). */
export const REMOVED_MEMBER = 'removed member; invite predates the removal'

/**
 * Whether `userId`'s removal keeps them from joining by `invite`: it was made (its clock) or,
 * with `byOrder`, applied (its place among the invites; not applied yet counts as after every
 * one so far) before the removal. The order is the relay's rule as it admits (ApplyOptions.live):
 * a join it refuses is never stored, and histories stored before the rule fold as they did.
 */
export function removalBars(s: MembershipState, userId: string, invite: { createdAt: number; order?: number }, byOrder: boolean): boolean {
  const removed = s.removedAt.get(userId)
  return removed !== undefined && (invite.createdAt <= removed.at || (byOrder && (invite.order ?? s.invitesApplied + 1) <= removed.invites))
}

/**
 * Devices that joined by an invite but lack keys no record gave them. Their invite carried the
 * keys of its own time only, and an epoch record wraps for the member devices of its time:
 *   - any invite: the current epoch's key, when its record was written before they joined and
 *     no add record of this epoch gave it since (after a rotation between invite and join they
 *     could read and write nothing until the next one, every 1,000 messages);
 *   - a 'full' invite: also the keys of the epochs after the invite's up to the one they joined
 *     in, until an add record of that epoch or later gave them. Without this, a rotation after
 *     the join (which wraps for them) hid those epochs for good: everything said in them.
 * Each is listed with the device that should give them the keys (`welcomer`): the invite's
 * signer while it is an admin's member device, else the first admin member device in byte order.
 */
export function devicesToWelcome(s: MembershipState): Array<{ device: string; userId: string; invite: InviteState; welcomer: string | undefined }> {
  const current = s.epochs.get(s.epoch)
  if (s.epoch === 0 || current === undefined || s.joinedVia.size === 0) return []
  const out: Array<{ device: string; userId: string; invite: InviteState; welcomer: string | undefined }> = []
  let fallback: string | undefined
  let fallbackFound = false
  for (const [device, via] of s.joinedVia) {
    const userId = s.devices.get(device)
    if (userId === undefined) continue
    const invite = s.invites.get(via.invite)
    // Made in this epoch: its token carries this key already.
    if (!invite || invite.epoch === s.epoch) continue
    const welcomed = s.welcomed.get(device) ?? -1
    const lacksCurrent = !current.wrapped.has(device) && welcomed < s.epoch
    const lacksBetween = invite.history === 'full' && via.epoch > invite.epoch && welcomed < via.epoch
    if (!lacksCurrent && !lacksBetween) continue
    const issuer = s.devices.get(invite.issuerDevice)
    let welcomer: string | undefined
    if (issuer !== undefined && s.members.get(issuer)?.role === 'admin') welcomer = invite.issuerDevice
    else {
      if (!fallbackFound) {
        fallbackFound = true
        for (const [d, u] of s.devices) if (s.members.get(u)?.role === 'admin' && (fallback === undefined || d < fallback)) fallback = d
      }
      welcomer = fallback
    }
    out.push({ device, userId, invite, welcomer })
  }
  return out
}
