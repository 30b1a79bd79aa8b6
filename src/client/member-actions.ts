/**
 * Who is in a conversation, changed by its members: invites (and their revocation), adding a
 * person with their devices, removing a member, making one an admin, leaving. Each action is
 * one or more signed records (records.ts) written into the outer log; the relay and every
 * device fold them by the same rules (membership.ts), so what an action may do is checked here
 * only to give the app a clear error early: the fold is what decides.
 *
 * Actions that change who may read start a new key epoch in the same write: a removed member,
 * or a 'from-join' newcomer, never holds the key of what the others said after (or before).
 * The conversation's API (conversation.ts) documents each action for apps.
 */
import { fromBase64Url, generateSigningKeyPair, toBase64Url } from '../shared/crypto/index.js'
import { keyCheckOf } from '../shared/envelope.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { sealKeyBundle } from '../shared/key-bundle.js'
import { deviceCapBars, type MembershipState } from '../shared/membership.js'
import {
  type DeviceCertificate,
  encodeAddBody,
  encodeInviteBody,
  encodeMemberChangeBody,
  encodeRevokeBody,
  MAX_ADD_DEVICES,
  readInviteBody,
  readRecord,
  RecordKind,
} from '../shared/records.js'
import type { ClientContext } from './client-context.js'
import { decodeInviteToken, encodeInviteToken } from './invite-token.js'
import type { MembershipBook } from './membership-book.js'
import { readPublicIdentity } from './public-identity.js'

export interface InviteOptions {
  /** Milliseconds until the invite stops working. Default: never. */
  expiresIn?: number
  /** How many people may join with it. Default: unlimited. */
  uses?: number
  /** 'full' (default): the joiner reads the history. */
  history?: 'full' | 'from-join'
}

/** A member as the app sees them. */
export interface MemberInfo {
  userId: string
  name?: string
  role: 'admin' | 'member'
  devices: string[]
}

/** What the actions read and ask of their conversation. */
export interface MemberActionsHost {
  readonly id: string
  readonly ctx: ClientContext
  readonly book: MembershipBook
  readonly membership: MembershipState
  /** A member's name, as said in the inner document (restated-context.ts). */
  name(userId: string): string | undefined
  /** The keys this device holds, by epoch (a copy). */
  keys(): Map<number, Uint8Array>
  /** Hold a new epoch's key, durably, before the record that starts the epoch is written. */
  keepKey(epoch: number, key: Uint8Array): Promise<void>
  /** Write signed records into the outer log, durably. */
  writeRecords(records: Uint8Array[]): Promise<void>
  /** Start a new key epoch, unless this device is starting one already (key-rotation.ts). */
  rotateOnce(): Promise<void>
  /** Settles once the key changed after a removal, leave or unlink (or the conversation closed). */
  rotationDone(): Promise<void>
  ready(): Promise<void>
  assertOpen(): void
}

export class MemberActions {
  /**
   * @example
   * ```ts
   * const actions = new MemberActions(host)
   * const token = await actions.invite({ uses: 1 })
   * ```
   */
  constructor(private readonly host: MemberActionsHost) {}

  async invite(options: InviteOptions = {}): Promise<string> {
    const { host } = this
    await host.ready()
    host.assertOpen()
    if (!host.book.isAdmin()) throw this.refused('only admins can invite')
    // Checked, not coerced: `uses: 0` or `expiresIn: 0` meant "unlimited" and "never", and a
    // misspelt history (from JavaScript, or a config file) handed over the whole history.
    const { expiresIn, uses } = options
    if (expiresIn !== undefined && !(Number.isSafeInteger(expiresIn) && expiresIn > 0)) throw this.invalid('expiresIn must be a whole number of milliseconds above 0')
    if (uses !== undefined && !(Number.isSafeInteger(uses) && uses > 0)) throw this.invalid('uses must be a whole number above 0')
    this.checkHistory(options.history)
    const pair = generateSigningKeyPair()
    const body = encodeInviteBody({
      room: host.id,
      invitePub: pair.publicKey,
      expiresAt: options.expiresIn ? Date.now() + options.expiresIn : 0,
      maxUses: options.uses ?? 0,
      history: options.history ?? 'full',
      createdAt: Date.now(),
    })
    let keys = host.keys()
    const records: Uint8Array[] = []
    if (options.history === 'from-join') {
      // WhatsApp's group rule: a new key from now on, and the invite carries only that one.
      const next = host.book.newEpoch()
      records.push(await host.ctx.signRecord(RecordKind.Epoch, next.body))
      keys = new Map([[next.epoch, next.key]])
    }
    const inviteRecord = await host.ctx.signRecord(RecordKind.Invite, body)
    records.push(inviteRecord)
    await host.writeRecords(records)
    return encodeInviteToken({ room: host.id, inviteSecret: pair.secretKey, inviteRecord, keys })
  }

  async revokeInvite(token: string): Promise<void> {
    const { host } = this
    await host.ready()
    this.requireAdmin()
    const invite = decodeInviteToken(token)
    if (invite.room !== host.id) throw new PetrelError(ErrorCode.InviteInvalid, 'invite is for another conversation', { conversationId: host.id })
    const { invitePub } = readInviteBody(readRecord(invite.inviteRecord).body)
    await host.writeRecords([await host.ctx.signRecord(RecordKind.Revoke, encodeRevokeBody({ room: host.id, invitePub, at: Date.now() }))])
  }

  members(): MemberInfo[] {
    return [...this.host.membership.members.values()].map((m) => {
      const name = this.host.name(m.userId)
      return { userId: m.userId, ...(name ? { name } : {}), role: m.role, devices: [...m.devices.keys()] }
    })
  }

  async removeMember(userId: string): Promise<void> {
    const { host } = this
    await host.ready()
    this.requireAdmin()
    if (!host.membership.members.has(userId)) throw this.notFound('not a member')
    if (userId === host.ctx.identity.userId) throw this.invalid('use leave() to leave')
    const remove = await host.ctx.signRecord(RecordKind.Remove, encodeMemberChangeBody({ room: host.id, userPub: fromBase64Url(userId), at: Date.now() }))
    const next = host.book.newEpoch(userId)
    const epoch = await host.ctx.signRecord(RecordKind.Epoch, next.body)
    await host.keepKey(next.epoch, next.key)
    await host.writeRecords([remove, epoch])
  }

  async makeAdmin(userId: string): Promise<void> {
    const { host } = this
    await host.ready()
    this.requireAdmin()
    if (!host.membership.members.has(userId)) throw this.notFound('not a member')
    await host.writeRecords([await host.ctx.signRecord(RecordKind.Promote, encodeMemberChangeBody({ room: host.id, userPub: fromBase64Url(userId), at: Date.now() }))])
  }

  async addMember(publicIdentity: string, options: { history?: 'full' | 'from-join' } = {}): Promise<void> {
    const { host } = this
    await host.ready()
    this.requireAdmin()
    this.checkHistory(options.history)
    const certs = await readPublicIdentity(publicIdentity)
    const userId = toBase64Url(certs[0]!.userPub)
    const fresh = certs.filter((c) => !host.membership.devices.has(toBase64Url(c.devicePub)))
    if (fresh.length === 0) throw this.invalid('already a member with all of those devices')
    if (host.membership.members.has(userId) && host.membership.members.get(userId)!.devices.size > 0 && options.history === 'from-join') {
      throw this.invalid("'from-join' is for people who are not members yet")
    }
    await this.addDevices(certs[0]!.userPub, fresh, options.history ?? 'full')
  }

  /** Throws what the relay would refuse an add of `devices` to `userId` for (a device cap). */
  private checkDeviceCaps(userId: string, devices: readonly DeviceCertificate[]): void {
    const { host } = this
    const capped = deviceCapBars(host.membership, host.membership.members.get(userId), devices.map((c) => toBase64Url(c.devicePub)))
    if (capped) throw this.invalid(capped)
  }

  /** A history option from JavaScript or a config file may be anything: only the two are taken. */
  private checkHistory(history: unknown): void {
    if (history !== undefined && history !== 'full' && history !== 'from-join') throw this.invalid("history must be 'full' or 'from-join'")
  }

  async addDevices(userPub: Uint8Array, certs: DeviceCertificate[], history: 'full' | 'from-join' = 'full'): Promise<void> {
    const { host } = this
    await host.ready()
    host.assertOpen()
    this.checkDeviceCaps(toBase64Url(userPub), certs.slice(0, MAX_ADD_DEVICES))
    // Someone left or was removed and the key has not changed yet: change it first. The relay
    // refuses an add under the key a person was removed from (so an admin's add right after a
    // leave took no effect, though it resolved), and a new device should not get only the key
    // the one who left holds. 'from-join' starts its own epoch below.
    if (history === 'full' && host.membership.rotationDue) {
      // Ours, unless one is under way (this device's or, folded meanwhile, another's).
      await host.rotateOnce()
      if (host.membership.rotationDue) await host.rotationDone()
      host.assertOpen()
    }
    const records: Uint8Array[] = []
    let keys = host.keys()
    let epoch = host.membership.epoch
    if (history === 'from-join') {
      const next = host.book.newEpoch()
      records.push(await host.ctx.signRecord(RecordKind.Epoch, next.body))
      await host.keepKey(next.epoch, next.key)
      keys = new Map([[next.epoch, next.key]])
      epoch = next.epoch
    }
    const current = keys.get(epoch)
    if (!current) throw this.refused('this device does not hold the current key yet')
    const body = encodeAddBody({
      room: host.id,
      userPub,
      epoch,
      keyCheck: keyCheckOf(current),
      at: Date.now(),
      devices: certs.slice(0, MAX_ADD_DEVICES).map((c) => ({ certificate: c.bytes, keyBundle: sealKeyBundle(keys, host.id, c.devicePub, c.agreementPub) })),
    })
    records.push(await host.ctx.signRecord(RecordKind.Add, body))
    await host.writeRecords(records)
  }

  /**
   * Give `device` (joined by an invite, `userId`'s) the keys its invite's token lacks, in an add
   * record: for a 'full' invite those of the epochs after the invite's, for 'from-join' the
   * current one alone (what the invite would carry had it been made now). Never the epochs
   * before the invite's: a person already a member joins a device by any token, even one used
   * up, and got earlier epochs no invite of theirs gave. See `devicesToWelcome` (membership.ts).
   */
  async welcome(device: string, userId: string, invite: { history: 'full' | 'from-join'; epoch: number }): Promise<void> {
    const { host } = this
    const epoch = host.membership.epoch
    const cert = host.membership.members.get(userId)?.devices.get(device)
    const held = host.keys()
    const current = held.get(epoch)
    if (!cert || !current) return
    const keys = invite.history === 'from-join' ? new Map([[epoch, current]]) : new Map([...held].filter(([e]) => e > invite.epoch))
    const body = encodeAddBody({
      room: host.id,
      userPub: cert.userPub,
      epoch,
      keyCheck: keyCheckOf(current),
      at: Date.now(),
      devices: [{ certificate: cert.bytes, keyBundle: sealKeyBundle(keys, host.id, cert.devicePub, cert.agreementPub) }],
    })
    await host.writeRecords([await host.ctx.signRecord(RecordKind.Add, body)])
  }

  async leave(): Promise<void> {
    const { host } = this
    await host.ready()
    const records: Uint8Array[] = []
    // The last admin leaving makes the longest-standing member an admin first (as WhatsApp
    // does): otherwise nobody could ever invite, add, remove or promote again.
    const heir = this.heirIfLastAdmin()
    if (heir) records.push(await host.ctx.signRecord(RecordKind.Promote, encodeMemberChangeBody({ room: host.id, userPub: fromBase64Url(heir), at: Date.now() })))
    records.push(await host.ctx.signRecord(RecordKind.Leave, encodeMemberChangeBody({ room: host.id, userPub: host.ctx.identity.userPub, at: Date.now() })))
    await host.writeRecords(records)
  }

  /** The member to make an admin when this user, the only admin, leaves: the first in relay order (then by clock, then id). */
  private heirIfLastAdmin(): string | undefined {
    const { members } = this.host.membership
    const me = this.host.ctx.identity.userId
    if (members.get(me)?.role !== 'admin') return undefined
    const others = [...members.values()].filter((m) => m.userId !== me)
    if (others.some((m) => m.role === 'admin')) return undefined
    others.sort((a, b) => (a.joinedSeq ?? Number.MAX_SAFE_INTEGER) - (b.joinedSeq ?? Number.MAX_SAFE_INTEGER) || a.joinedAt - b.joinedAt || (a.userId < b.userId ? -1 : 1))
    return others[0]?.userId
  }

  private requireAdmin(): void {
    this.host.assertOpen()
    if (!this.host.book.isAdmin()) throw this.refused('only admins can do this')
  }

  private invalid(message: string): PetrelError {
    return new PetrelError(ErrorCode.InvalidArgument, message, { conversationId: this.host.id })
  }

  private refused(message: string): PetrelError {
    return new PetrelError(ErrorCode.Refused, message, { conversationId: this.host.id })
  }

  private notFound(message: string): PetrelError {
    return new PetrelError(ErrorCode.NotFound, message, { conversationId: this.host.id })
  }
}
