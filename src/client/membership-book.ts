/**
 * A device's view of who is in a conversation and which keys it holds. Records are folded
 * in relay order (each record's row sequence number; our own not yet acknowledged ones
 * last: those of earlier sessions first, then this session's in the order written), so every
 * device reaches the relay's conclusion; epoch keys wrapped for this device are unwrapped as
 * their records arrive.
 *
 * ```
 * rseq:{id} := uint8 1 • varUint n • { varString recordKey • varUint seq }{n}
 * ```
 */
import * as encoding from 'lib0/encoding'
import type * as Y from 'yjs'
import { constantTimeEqual, randomKey, sha256, toBase64Url, unwrapKey, wrapKeyForAll } from '../shared/crypto/index.js'
import { keyCheckOf } from '../shared/envelope.js'
import { openKeyBundle } from '../shared/key-bundle.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { applyRecord, emptyMembership, type MembershipState, recordMember } from '../shared/membership.js'
import { type DeviceCertificate, encodeEpochBody, epochWrapContext, readRecord, RecordKind, type SignedRecord } from '../shared/records.js'
import { StrictReader } from '../shared/wire.js'
import type { Identity } from './identity.js'

/** Stands in a record's sequence number when the relay refused it (varUint-encodable, never a real seq). */
const REFUSED = 2 ** 52

export class MembershipBook {
  state: MembershipState
  private readonly recordSeq = new Map<string, number>()
  /**
   * Records whose signatures verified, by key, with the bytes that verified: every fold
   * replays every record (a key rotation every 1,000 messages adds one), and checking each
   * signature again each time grew with the conversation — 20–85 ms a fold after a few
   * thousand messages on a busy device. Other bytes under the same key are checked afresh.
   */
  private readonly signatureChecked = new Map<string, Uint8Array>()
  /** epoch → relay sequence number of the record that started it (when known). */
  private epochStarts = new Map<number, number>()
  /**
   * Records this object's conversation wrote, in the order written (`wrote`). Unacknowledged
   * records of an earlier session (a leave the relay stored while refusing this device, before
   * its acknowledgement came) were written before them; ordered by key alone, a fresh join
   * folded before that leave whenever its session's random client id was the lower, and the
   * person who came back stayed "left" until the relay's rows came.
   */
  private readonly writtenHere = new Map<string, number>()

  constructor(
    readonly room: string,
    private readonly identity: Identity,
  ) {
    this.state = emptyMembership(room)
  }

  /** Records written here now, under these keys (in this order): they fold after every earlier one not yet acknowledged. */
  wrote(keys: Iterable<string>): void {
    for (const key of keys) if (!this.writtenHere.has(key)) this.writtenHere.set(key, this.writtenHere.size + 1)
  }

  /** Remember the row a record arrived in; returns true when this is news. */
  noteSeq(recordKey: string, seq: number): boolean {
    const known = this.recordSeq.get(recordKey)
    // A refusal is for good: an ack after it is the relay acknowledging again the row that holds
    // the refused record's blank (a resend of it), not the record.
    if (known === seq || known === REFUSED) return false
    this.recordSeq.set(recordKey, seq)
    return true
  }

  encodeSeqs(): Uint8Array {
    const e = encoding.createEncoder()
    encoding.writeUint8(e, 1)
    encoding.writeVarUint(e, this.recordSeq.size)
    for (const [k, seq] of this.recordSeq) {
      encoding.writeVarString(e, k)
      encoding.writeVarUint(e, seq)
    }
    return encoding.toUint8Array(e)
  }

  loadSeqs(bytes: Uint8Array): void {
    const r = new StrictReader(bytes)
    if (r.uint8() !== 1) throw new PetrelError(ErrorCode.VersionMismatch, 'stored record order has an unknown format version')
    const n = r.varUint(1 << 20)
    for (let i = 0; i < n; i++) this.recordSeq.set(r.varString(64), r.varUint())
  }

  /** The relay refused one of our records for good (e.g. an add raced by a new epoch): never fold it. */
  refuse(recordKey: string): void {
    this.recordSeq.set(recordKey, REFUSED)
  }

  private folding: Promise<unknown> = Promise.resolve()

  /**
   * Refold every record of the outer log; returns the records whose signature failed. Folds
   * run one after another, each reading the records as they stand when its turn comes: a fold
   * awaits signature checks, and two at once (the receive path's and a local write's) let an
   * earlier one, over fewer records, finish last and put back a membership without the
   * latest. A device that joined then held the creator's messages as from a non-member, for
   * good (seen as a rare timeout in connection.test under load).
   */
  fold(records: Y.Map<Uint8Array>): Promise<number> {
    const run = this.folding.then(() => this.foldNow(records))
    this.folding = run.catch(() => undefined)
    return run
  }

  private async foldNow(records: Y.Map<Uint8Array>): Promise<number> {
    const parsed: Array<{ key: string; seq: number; rec: SignedRecord; bytes: Uint8Array }> = []
    for (const [key, bytes] of records) {
      if (this.recordSeq.get(key) === REFUSED) continue
      try {
        parsed.push({ key, seq: this.recordSeq.get(key) ?? Number.MAX_SAFE_INTEGER, rec: readRecord(bytes), bytes })
      } catch {
        // Not ours to fix: the relay refuses malformed records, so this is local garbage.
      }
    }
    // Relay order; unacknowledged own records last, genesis always first.
    const written = (key: string) => this.writtenHere.get(key) ?? 0
    parsed.sort((a, b) =>
      a.rec.kind === RecordKind.Genesis ? -1 : b.rec.kind === RecordKind.Genesis ? 1 : a.seq - b.seq || written(a.key) - written(b.key) || compareIds(a.key, b.key),
    )
    const next = emptyMembership(this.room)
    const starts = new Map<number, number>()
    let badSignatures = 0
    // A record counts once, at its first place in relay order. The same bytes again under
    // another key (any member can upload a record it has seen) would apply again there: an
    // old remove undoing a rejoin since, an old add bringing back someone removed. The relay
    // knows them already and changes nothing for them, so neither may a device.
    const seen = new Set<string>()
    for (const { key, rec, seq, bytes } of parsed) {
      const id = toBase64Url(sha256(bytes))
      if (seen.has(id)) continue
      seen.add(id)
      const epochBefore = next.epoch
      const known = this.signatureChecked.get(key)
      const joiner = recordMember(rec)
      const wasMember = joiner !== undefined && next.members.has(joiner)
      const r = await applyRecord(next, rec, { signatureChecked: known !== undefined && (known === bytes || constantTimeEqual(known, bytes)) })
      if (r.ok && joiner !== undefined && !wasMember && seq !== Number.MAX_SAFE_INTEGER) {
        const member = next.members.get(joiner)
        if (member) member.joinedSeq = seq
      }
      if (!r.ok && r.reason === 'bad signature') badSignatures++
      // Any other outcome comes after applyRecord's signature check: these bytes verified.
      else this.signatureChecked.set(key, bytes)
      if (r.ok && next.epoch !== epochBefore && seq !== Number.MAX_SAFE_INTEGER) starts.set(next.epoch, seq)
    }
    this.state = next
    this.epochStarts = starts
    return badSignatures
  }

  /**
   * May an envelope sealed under `epoch`, in row `seq`, be shown? Not when a later epoch had
   * already begun before it in relay order: the relay admits envelopes under the current key
   * only, so such a row is a removed member's (or a stale key holder's) write that a
   * dishonest relay let through — every device refuses it alike. The record's own row may
   * hold envelopes sealed just before it (the relay decides struct by struct), hence `<=`.
   */
  sealedInTime(epoch: number, seq: number): boolean {
    const ended = this.epochStarts.get(epoch + 1)
    return ended === undefined || seq <= ended
  }

  /**
   * Make `keys` hold, for every epoch, the key of the record that won it: add the ones
   * wrapped for this device, and replace a key of ours whose record lost a race for its
   * epoch number (the relay refused it; the winner's key check differs).
   */
  unwrapKeys(keys: Map<number, Uint8Array>, replaced?: (key: Uint8Array) => void): boolean {
    let added = false
    for (const [epoch, e] of this.state.epochs) {
      const held = keys.get(epoch)
      if (held && constantTimeEqual(keyCheckOf(held), e.keyCheck)) continue
      const wrapped = e.wrapped.get(this.identity.deviceId)
      if (!wrapped) continue
      try {
        const key = unwrapKey(wrapped, this.identity.agreementSecret, epochWrapContext(this.room, epoch))
        if (held) replaced?.(held)
        keys.set(epoch, key)
        added = true
      } catch {
        // A key we cannot open is not for us (or was tampered with): we simply lack it.
      }
    }
    // Keys given in add records (a person added directly, or a newly linked device): taken
    // when the epoch record names the same key, or when no record of that epoch is folded yet.
    for (const bundle of this.state.bundles.get(this.identity.deviceId) ?? []) {
      let given: Map<number, Uint8Array>
      try {
        given = openKeyBundle(bundle, this.room, this.identity.devicePub, this.identity.agreementSecret)
      } catch {
        continue
      }
      for (const [epoch, key] of given) {
        if (keys.has(epoch)) continue
        const check = this.state.epochs.get(epoch)?.keyCheck
        if (check && !constantTimeEqual(check, keyCheckOf(key))) continue
        keys.set(epoch, key)
        added = true
      }
    }
    return added
  }

  /**
   * The body of a new epoch record: a fresh key wrapped for every current member device,
   * except those of `excludeUser` (being removed in the same write).
   */
  newEpoch(excludeUser?: string): { epoch: number; key: Uint8Array; body: Uint8Array } {
    const key = randomKey()
    const epoch = this.state.epoch + 1
    const devices: DeviceCertificate[] = []
    for (const [userId, member] of this.state.members) if (userId !== excludeUser) devices.push(...member.devices.values())
    // One ephemeral key for every device (wrap.ts says why that is sound).
    const keys = wrapKeyForAll(
      key,
      devices.map((d) => d.agreementPub),
      epochWrapContext(this.room, epoch),
    )
    const wrapped = devices.map((d, i): [Uint8Array, Uint8Array] => [d.devicePub, keys[i]!])
    return { epoch, key, body: encodeEpochBody({ room: this.room, epoch, at: Date.now(), keyCheck: keyCheckOf(key), wrapped }) }
  }

  isAdmin(userId = this.identity.userId): boolean {
    return this.state.members.get(userId)?.role === 'admin'
  }
}

/** Order of two id-derived keys (`client.clock` in base 36): by client, then clock, as numbers. */
function compareIds(a: string, b: string): number {
  const [ac, ak] = a.split('.').map((x) => Number.parseInt(x, 36)) as [number, number]
  const [bc, bk] = b.split('.').map((x) => Number.parseInt(x, 36)) as [number, number]
  return ac - bc || ak - bk
}

/**
 * A short fingerprint of two identities, the same on both sides (Signal's safety number):
 * 60 digits in 12 groups, from SHA-256 over both user keys in a fixed order.
 */
export function safetyNumber(a: Uint8Array, b: Uint8Array): string {
  const [first, second] = toBase64Url(a) < toBase64Url(b) ? [a, b] : [b, a]
  const e = encoding.createEncoder()
  encoding.writeVarString(e, 'petrel/v1/safety-number')
  encoding.writeVarUint8Array(e, first)
  encoding.writeVarUint8Array(e, second)
  let digest = sha256(encoding.toUint8Array(e))
  const groups: string[] = []
  // Five bytes give 40 bits; mod 100000 keeps 5 digits each, two digests give 12 groups.
  for (let round = 0; groups.length < 12; round++) {
    if (round > 0) digest = sha256(digest)
    for (let i = 0; i + 5 <= digest.length && groups.length < 12; i += 5) {
      let n = 0
      for (let j = 0; j < 5; j++) n = n * 256 + digest[i + j]!
      groups.push(String(n % 100_000).padStart(5, '0'))
    }
  }
  return groups.join(' ')
}

