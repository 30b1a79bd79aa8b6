/**
 * Membership as a fold over signed records. The relay applies them in the order it admits
 * them; clients refold every record they hold, genesis first, then invites, then joins (only
 * the relay counts invite uses, atomically). Both run this same code, so they agree on who
 * is in a conversation; a record not properly signed or not authorised is ignored everywhere.
 */
import { toBase64Url } from './crypto/index.js'
import {
  type DeviceCertificate,
  type InviteBody,
  readGenesisBody,
  readInviteBody,
  readJoinBody,
  RecordKind,
  roomIdFor,
  type SignedRecord,
  verifyRecordSignature,
} from './records.js'

export type Role = 'admin' | 'member'

export interface MemberState {
  userId: string
  role: Role
  joinedAt: number
  devices: Map<string, DeviceCertificate>
}

export interface InviteState extends InviteBody {
  issuer: string
  uses: number
}

export interface MembershipState {
  room: string
  creator: string | undefined
  members: Map<string, MemberState>
  invites: Map<string, InviteState>
  /** devicePub (base64url) → userId */
  devices: Map<string, string>
}

export const emptyMembership = (room: string): MembershipState => ({
  room,
  creator: undefined,
  members: new Map(),
  invites: new Map(),
  devices: new Map(),
})

export type ApplyResult = { ok: true } | { ok: false; reason: string }

const addDevice = (s: MembershipState, member: MemberState, cert: DeviceCertificate) => {
  const id = toBase64Url(cert.devicePub)
  member.devices.set(id, cert)
  s.devices.set(id, member.userId)
}

/**
 * Apply one record. `now` is the time against which invite expiry is judged: the relay
 * passes its clock; clients pass the join's claimed time (the relay already refused late
 * joins, and clients must agree with each other, not with their own clocks).
 */
export async function applyRecord(
  s: MembershipState,
  rec: SignedRecord,
  now?: number,
  /** Clients receive joins the relay already counted; only the relay enforces `maxUses`. */
  countUses = true,
): Promise<ApplyResult> {
  if (!(await verifyRecordSignature(rec))) return { ok: false, reason: 'bad signature' }
  switch (rec.kind) {
    case RecordKind.Genesis: {
      const g = readGenesisBody(rec.body)
      const signer = rec.signer!
      if (s.creator !== undefined) return { ok: false, reason: 'genesis already applied' }
      if (g.room !== s.room || roomIdFor(g.nonce, signer.userPub) !== s.room) return { ok: false, reason: 'genesis does not match room' }
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
      if (!s.invites.has(key)) s.invites.set(key, { ...inv, issuer, uses: 0 })
      return { ok: true }
    }
    case RecordKind.Join: {
      const j = readJoinBody(rec.body)
      if (j.room !== s.room) return { ok: false, reason: 'join for another room' }
      const inv = s.invites.get(toBase64Url(j.invitePub))
      if (!inv) return { ok: false, reason: 'unknown invite' }
      const at = now ?? j.joinedAt
      if (inv.expiresAt !== 0 && at > inv.expiresAt) return { ok: false, reason: 'invite expired' }
      const userId = toBase64Url(j.joiner.userPub)
      const existing = s.members.get(userId)
      if (existing) {
        addDevice(s, existing, j.joiner)
        return { ok: true }
      }
      if (countUses && inv.maxUses !== 0 && inv.uses >= inv.maxUses) return { ok: false, reason: 'invite used up' }
      inv.uses++
      const member: MemberState = { userId, role: 'member', joinedAt: j.joinedAt, devices: new Map() }
      s.members.set(userId, member)
      addDevice(s, member, j.joiner)
      return { ok: true }
    }
  }
}

/** The member user a device belongs to, when the device is known and its user is a member. */
export const memberOfDevice = (s: MembershipState, devicePub: Uint8Array): string | undefined => {
  const user = s.devices.get(toBase64Url(devicePub))
  return user !== undefined && s.members.has(user) ? user : undefined
}
