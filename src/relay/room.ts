/**
 * One conversation's room on the relay: who may enter (membership folded from signed
 * records), which device owns which outer client id, the next sequence number, and the
 * connections that have it open. Admissions and record changes run one at a time per room,
 * so invite uses are counted atomically.
 */
import { constantTimeEqual, sha256, toBase64Url } from '../shared/crypto/index.js'
import { applyRecord, emptyMembership, type MembershipState, memberOfDevice, REMOVED_MEMBER, removalBars, TOO_MANY_DEVICES } from '../shared/membership.js'
import { type Admission, AdmissionKind, readInviteBody, readJoinBody, readRecord, RecordKind, readGenesisBody } from '../shared/records.js'
import type { ReceiptEntry } from '../shared/room-messages.js'
import type { NewRow } from './store/relay-store.js'
import { Reason } from '../shared/wire.js'

const recordId = (bytes: Uint8Array): string => toBase64Url(sha256(bytes))

export interface RoomMemberConn {
  /** Deliver a room message (already encoded) to this connection. */
  deliver(room: string, message: Uint8Array): void
  close(code: number, reason: string): void
}

export interface RoomPeer {
  /** 'catching-up' buffers deliveries until the catch-up read has been sent. */
  state: 'catching-up' | 'live'
  buffer: Array<{ message: Uint8Array; seq: number }>
  /** Bytes of the messages in `buffer`. */
  bufferedBytes: number
  /** The device said `want-parts 0`: live snapshot parts go to it as placeholders. */
  spareParts: boolean
  /** It said `want-parts 2`: its catch-ups spare parts until a compacted row goes to it (RelayCore.catchUp). */
  spareInCatchUp: boolean
}

/** A row not yet taken for a commit: its struct bytes stay in parts until then. */
export interface OpenRow {
  conn: RoomMemberConn
  row: NewRow
  parts: Uint8Array[]
  /** Parts of the update that opened the row: `row.structs` already holds them. */
  ownParts: number
  bytes: number
}

export class Room {
  readonly membership: MembershipState
  /**
   * SHA-256 (base64url) of the records already applied, to recognise resends. A digest, not
   * the record's base64 (~400 bytes each, kept for as long as the room is open).
   */
  readonly knownRecords = new Set<string>()
  /** Highest seq this node has fanned out to its peers (all rows up to it are durable). */
  committedSeq: number
  /** Bytes stored for this room (rows and records), for the per-conversation quota. */
  bytes = 0
  /** Of `bytes`, those handed to the committer and not yet durable. */
  uncommittedBytes = 0
  /**
   * Seqs of rows this node stored and counted in `bytes` that wait for a tail to fan them out:
   * the tail counts every other row it reads, which another node of a cluster stored.
   */
  readonly countedSeqs = new Set<number>()
  /** The running read of rows from the store, when one is running. */
  tailing: Promise<void> | undefined
  readonly peers = new Map<RoomMemberConn, RoomPeer>()
  /**
   * Snapshot parts refused per device (base64url) since its last snapshot record, in updates
   * marked as parts: a record is refused while any of its parts was, wherever in the upload.
   * Only parts refused in the record's own update counted: on a relay whose envelope limit is
   * below a part's size, the earlier parts became blanks, the record was stored, and the
   * relay compacted the history under a snapshot nobody could read whole.
   */
  readonly partsRefused = new Map<string, number>()
  /** Latest acknowledgement per device (base64url), never going back. */
  readonly receipts = new Map<string, ReceiptEntry>()
  private chain: Promise<unknown> = Promise.resolve()
  /** Rows up to this seq are compacted (after a snapshot); a compaction is running when set. */
  compactedThrough = 0
  compacting: Promise<void> | undefined
  /**
   * A compaction's rewrite of rows, while the store applies it; and the catch-ups reading rows
   * now, with what waits for them to end. The two exclude each other (RelayCore.catchUp).
   */
  compactionApplying: Promise<unknown> | undefined
  catchUpsReading = 0
  readonly catchUpsDone: Array<() => void> = []

  constructor(
    readonly id: string,
    readonly clients: Map<number, { device: string; next: number }>,
    maxSeq: number,
  ) {
    this.membership = emptyMembership(id)
    this.committedSeq = maxSeq
  }

  /** Operations queued with `run` and not finished yet. */
  busy = 0

  /**
   * The newest row waiting for the committer, while a following update of the same
   * connection and client may still be appended to it (see `RelayCore.commitUpdate`).
   */
  openRow: OpenRow | undefined = undefined

  /** A commit of this room failed: the room was dropped (to reload from the store) and stores nothing more. */
  failed = false

  /** Run `fn` after every earlier operation on this room. */
  run<T>(fn: () => Promise<T> | T): Promise<T> {
    this.busy++
    const next = this.chain.then(fn, fn)
    const done = () => {
      this.busy--
    }
    this.chain = next.then(done, done)
    return next
  }

  async loadRecords(records: Uint8Array[]): Promise<void> {
    for (const bytes of records) {
      if (this.knownRecords.has(recordId(bytes))) continue
      const result = await applyRecord(this.membership, readRecord(bytes), { relay: true })
      if (result.ok) this.knownRecords.add(recordId(bytes))
    }
  }

  isMemberDevice(devicePub: Uint8Array): boolean {
    return memberOfDevice(this.membership, devicePub) !== undefined
  }

  /**
   * Decide an OPEN for a device of `userPub`. Returns the records to persist on success,
   * or a reason. Call inside `run`.
   */
  async admit(
    devicePub: Uint8Array,
    admission: Admission,
    now: number,
    /** The room holds as much as it may, records' allowance included: nobody new gets in. */
    full = false,
  ): Promise<{ ok: true; records: Uint8Array[] } | { ok: false; reason: number; message: string }> {
    if (this.isMemberDevice(devicePub)) return { ok: true, records: [] }
    if (admission.kind !== AdmissionKind.Join) return { ok: false, reason: Reason.NotMember, message: 'not a member of this conversation' }
    const invite = readRecord(admission.invite)
    const join = readRecord(admission.join)
    if (invite.kind !== RecordKind.Invite || join.kind !== RecordKind.Join) {
      return { ok: false, reason: Reason.BadAdmission, message: 'admission must carry an invite and a join record' }
    }
    // Nothing is applied to the room's membership until the admission is known to be for this
    // device: a refused open used to leave its invite and join applied in memory and never
    // stored, a member nobody could see, admitted later with no admission at all.
    let joiner: Uint8Array
    let joinerUser: string
    let invitePub: string
    let inviteBody: ReturnType<typeof readInviteBody>
    try {
      const body = readJoinBody(join.body)
      joiner = body.joiner.devicePub
      joinerUser = toBase64Url(body.joiner.userPub)
      inviteBody = readInviteBody(invite.body)
      invitePub = toBase64Url(inviteBody.invitePub)
    } catch {
      return { ok: false, reason: Reason.BadAdmission, message: 'admission records are malformed' }
    }
    if (joiner.length !== devicePub.length || !constantTimeEqual(joiner, devicePub)) {
      return { ok: false, reason: Reason.BadAdmission, message: 'join record is for another device' }
    }
    // A join this room holds already, from a device that is no longer a member: it was removed
    // (or unlinked) since. Applied again here, and not by the devices (they skip records they
    // hold), it let the device back in at the relay alone, whose wraps every epoch then missed.
    if (this.knownRecords.has(recordId(join.bytes))) return { ok: false, reason: Reason.NotMember, message: 'removed from the conversation' }
    // Each join stores its records and binds a client id: past the allowance, joins from an
    // open invite grew a full room without bound. Only now: a device that could never get in
    // (removed, no admission) is told so, not "full for now", which devices take as passing.
    if (full) {
      // Removed since the invite (a new join record, so not caught above): removed, not "full".
      if (removalBars(this.membership, joinerUser, { createdAt: inviteBody.createdAt, order: this.membership.invites.get(invitePub)?.order }, true)) {
        return { ok: false, reason: Reason.NotMember, message: `removed from the conversation (${REMOVED_MEMBER})` }
      }
      return { ok: false, reason: Reason.QuotaExceeded, message: 'the conversation is full' }
    }
    const toStore: Uint8Array[] = []
    const inviteKey = recordId(invite.bytes)
    // An invite this admission brings is taken back if its join is refused: only stored records count.
    let inviteAdded = false
    if (!this.knownRecords.has(inviteKey)) {
      inviteAdded = !this.membership.invites.has(invitePub)
      const r = await applyRecord(this.membership, invite, { now, relay: true })
      if (!r.ok) return { ok: false, reason: Reason.BadAdmission, message: `invite refused: ${r.reason}` }
      this.knownRecords.add(inviteKey)
      toStore.push(invite.bytes)
    }
    const r = await applyRecord(this.membership, join, { now, relay: true, live: true })
    if (!r.ok) {
      if (toStore.length > 0) {
        this.knownRecords.delete(inviteKey)
        if (inviteAdded) {
          // Never stored, so never counted by the devices either (InviteState.order).
          this.membership.invites.delete(invitePub)
          this.membership.invitesApplied--
        }
      }
      if (r.reason === REMOVED_MEMBER || r.reason === 'device was unlinked') return { ok: false, reason: Reason.NotMember, message: `removed from the conversation (${r.reason})` }
      if (r.reason.startsWith(TOO_MANY_DEVICES)) return { ok: false, reason: Reason.TooManyDevices, message: `join refused: ${r.reason}` }
      const reason = r.reason.includes('expired')
        ? Reason.InviteExpired
        : r.reason.includes('used up')
          ? Reason.InviteUsedUp
          : r.reason.includes('revoked')
            ? Reason.InviteRevoked
            : Reason.BadAdmission
      return { ok: false, reason, message: `join refused: ${r.reason}` }
    }
    this.knownRecords.add(recordId(join.bytes))
    toStore.push(join.bytes)
    if (!this.isMemberDevice(devicePub)) return { ok: false, reason: Reason.BadAdmission, message: 'join record is for another device' }
    return { ok: true, records: toStore }
  }

  /**
   * Apply one record found in an uploaded update. Returns true when it is already known,
   * the bytes to persist when it is new and valid, false when it is refused. Call inside `run`.
   */
  async applyUploadedRecord(bytes: Uint8Array, now: number): Promise<Uint8Array | boolean> {
    const id = recordId(bytes)
    if (this.knownRecords.has(id)) return true
    let rec: ReturnType<typeof readRecord>
    try {
      rec = readRecord(bytes)
    } catch {
      return false
    }
    const r = await applyRecord(this.membership, rec, { now, relay: true, live: true })
    if (!r.ok) return false
    this.knownRecords.add(id)
    return bytes
  }

  /** The room's state vector: next expected clock per outer client. */
  stateVector(): Map<number, number> {
    const sv = new Map<number, number>()
    for (const [client, { next }] of this.clients) if (next > 0) sv.set(client, next)
    return sv
  }
}

/** Check a genesis admission for a room that does not exist yet. */
export async function checkGenesis(room: string, devicePub: Uint8Array, admission: Admission): Promise<Uint8Array | string> {
  if (admission.kind !== AdmissionKind.Genesis) return 'unknown conversation'
  const rec = readRecord(admission.genesis)
  if (rec.kind !== RecordKind.Genesis) return 'not a genesis record'
  if (readGenesisBody(rec.body).room !== room) return 'genesis is for another room'
  const probe = emptyMembership(room)
  const r = await applyRecord(probe, rec)
  if (!r.ok) return r.reason
  if (memberOfDevice(probe, devicePub) === undefined) return 'genesis signed by another device'
  return rec.bytes
}
