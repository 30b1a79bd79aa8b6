/**
 * Signed records that decide identity and access. The relay reads these (they carry public
 * keys only — never names, titles or conversation keys) and so does every client; both
 * verify them with the same code.
 *
 * ```
 * certificate := uint8 1 • varUint8Array userPub(32) • varUint8Array devicePub(32)
 *                • varUint8Array deviceAgreementPub(32) • varUint createdAt
 *                • varUint8Array userSignature(64)        domain 'device-certificate', by userPub
 * record      := uint8 1 • varUint kind • varUint8Array body • varUint8Array signerCertificate
 *                • varUint8Array signature(64)            domain per kind, by the signer
 * genesis body := varString room • varUint8Array nonce(16) • varUint createdAt
 *                 room = base64url(sha256('petrel/v1/room' • nonce • creatorUserPub))[0..22]
 * invite  body := varString room • varUint8Array invitePub(32) • varUint expiresAt (0: never)
 *                 • varUint maxUses (0: unlimited) • varUint history (0 full, 1 from-join) • varUint createdAt
 * join    body := varString room • varUint8Array invitePub • varUint8Array joinerCertificate • varUint joinedAt
 *                 signerCertificate is empty: the invite's secret key signs (domain 'join')
 * remove  body := varString room • varUint8Array userPub • varUint at        (by an admin device)
 * promote body := varString room • varUint8Array userPub • varUint at        (by an admin device)
 * leave   body := varString room • varUint8Array userPub • varUint at        (by the leaving user's device)
 * revoke  body := varString room • varUint8Array invitePub • varUint at      (by an admin device)
 * epoch   body := varString room • varUint epoch • varUint at • varUint8Array keyCheck(8) • varUint n
 *                 • { varUint8Array devicePub • varUint8Array wrappedKey }{n} (by a member device)
 *                 the conversation key of `epoch`, wrapped (X25519 + HKDF + XChaCha20-Poly1305,
 *                 context = varString room • varUint epoch) for every member device
 * add     body := varString room • varUint8Array userPub • varUint epoch • varUint8Array keyCheck(8) • varUint at
 *                 • varUint n • { varUint8Array deviceCertificate • varUint8Array keyBundle }{n}
 *                 by an admin device (adding a person or their devices), or by a device of `userPub`
 *                 itself (a person linking their own devices); every certificate signed by userPub.
 *                 keyBundle: the conversation keys the device may read with (see key-bundle.ts);
 *                 epoch/keyCheck name the current key, so the relay refuses an add raced by a new epoch
 * unlink  body := varString room • varUint8Array devicePub • varUint at
 *                 by a device of the same person (or an admin); that device is out for good
 * snapshot body := varString room • varUint coversSeq • varUint8Array snapshotId(16) • varUint parts • varUint at
 *                 by a member device: envelopes `snapshotId` (parts of one encrypted inner-doc state)
 *                 hold everything in rows up to coversSeq, so the relay may compact those rows
 * admission := varUint kind(0 none, 1 genesis, 2 join) • [genesis record | invite record • join record]
 * ```
 */
import * as encoding from 'lib0/encoding'
import { SignatureDomain, sha256, toBase64Url, verifyWithDomain } from './crypto/index.js'
import { ErrorCode, PetrelError } from './errors.js'
import { StrictReader } from './wire.js'

export const RECORD_VERSION = 1
export const CERTIFICATE_VERSION = 1

export const RecordKind = { Genesis: 1, Invite: 2, Join: 3, Remove: 4, Promote: 5, Leave: 6, Revoke: 7, Epoch: 8, Add: 9, Unlink: 10, Snapshot: 11 } as const
export type RecordKind = (typeof RecordKind)[keyof typeof RecordKind]

export interface DeviceCertificate {
  userPub: Uint8Array
  devicePub: Uint8Array
  agreementPub: Uint8Array
  createdAt: number
  signature: Uint8Array
  bytes: Uint8Array
}

export interface GenesisBody {
  room: string
  nonce: Uint8Array
  createdAt: number
}
export interface InviteBody {
  room: string
  invitePub: Uint8Array
  expiresAt: number
  maxUses: number
  history: 'full' | 'from-join'
  createdAt: number
}
export interface JoinBody {
  room: string
  invitePub: Uint8Array
  joiner: DeviceCertificate
  joinedAt: number
}

export interface SignedRecord {
  kind: RecordKind
  body: Uint8Array
  signer: DeviceCertificate | undefined
  signature: Uint8Array
  bytes: Uint8Array
}

const malformed = (m: string) => new PetrelError(ErrorCode.Malformed, m)

export function certificatePayload(userPub: Uint8Array, devicePub: Uint8Array, agreementPub: Uint8Array, createdAt: number) {
  const e = encoding.createEncoder()
  encoding.writeUint8(e, CERTIFICATE_VERSION)
  encoding.writeVarUint8Array(e, userPub)
  encoding.writeVarUint8Array(e, devicePub)
  encoding.writeVarUint8Array(e, agreementPub)
  encoding.writeVarUint(e, createdAt)
  return encoding.toUint8Array(e)
}

export function encodeCertificate(payload: Uint8Array, signature: Uint8Array): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeUint8Array(e, payload)
  encoding.writeVarUint8Array(e, signature)
  return encoding.toUint8Array(e)
}

/** Parse (not verify) a device certificate. */
export function readCertificate(bytes: Uint8Array): DeviceCertificate {
  const r = new StrictReader(bytes)
  if (r.uint8() !== CERTIFICATE_VERSION) throw new PetrelError(ErrorCode.VersionMismatch, 'unknown certificate version')
  const userPub = key32(r)
  const devicePub = key32(r)
  const agreementPub = key32(r)
  const createdAt = r.varUint()
  const signature = r.varBytes(64)
  r.end()
  if (signature.length !== 64) throw malformed('bad certificate signature length')
  return { userPub, devicePub, agreementPub, createdAt, signature, bytes }
}

const key32 = (r: StrictReader) => {
  const k = r.varBytes(32)
  if (k.length !== 32) throw malformed('key must be 32 bytes')
  return k
}

/** True when the user key signed this device certificate. */
export async function verifyCertificate(cert: DeviceCertificate): Promise<boolean> {
  const payload = certificatePayload(cert.userPub, cert.devicePub, cert.agreementPub, cert.createdAt)
  return verifyWithDomain(SignatureDomain.DeviceCertificate, cert.userPub, payload, cert.signature)
}

export const domainOf = (kind: RecordKind) =>
  kind === RecordKind.Genesis
    ? SignatureDomain.Genesis
    : kind === RecordKind.Invite
      ? SignatureDomain.Invite
      : kind === RecordKind.Join
        ? SignatureDomain.Join
        : kind === RecordKind.Epoch
          ? SignatureDomain.Epoch
          : kind === RecordKind.Snapshot
            ? SignatureDomain.Snapshot
            : SignatureDomain.Membership

export function recordSigningPayload(kind: RecordKind, body: Uint8Array): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, kind)
  encoding.writeVarUint8Array(e, body)
  return encoding.toUint8Array(e)
}

export function encodeRecord(kind: RecordKind, body: Uint8Array, signerCert: Uint8Array, signature: Uint8Array) {
  const e = encoding.createEncoder()
  encoding.writeUint8(e, RECORD_VERSION)
  encoding.writeVarUint(e, kind)
  encoding.writeVarUint8Array(e, body)
  encoding.writeVarUint8Array(e, signerCert)
  encoding.writeVarUint8Array(e, signature)
  return encoding.toUint8Array(e)
}

export function readRecord(bytes: Uint8Array): SignedRecord {
  const r = new StrictReader(bytes)
  if (r.uint8() !== RECORD_VERSION) throw new PetrelError(ErrorCode.VersionMismatch, 'unknown record version')
  const kind = r.varUint(255)
  if (kind < RecordKind.Genesis || kind > RecordKind.Snapshot) throw malformed('unknown record kind')
  const recordKind = kind as RecordKind
  const body = r.varBytes(64 * 1024)
  const certBytes = r.varBytes(1024)
  const signature = r.varBytes(64)
  r.end()
  if (signature.length !== 64) throw malformed('bad record signature length')
  const signer = certBytes.length === 0 ? undefined : readCertificate(certBytes)
  if ((recordKind === RecordKind.Join) !== (signer === undefined)) throw malformed('join records carry no signer certificate; others must')
  return { kind: recordKind, body, signer, signature, bytes }
}

/**
 * Verify the record's signature chain: for genesis/invite, the certificate is signed by its
 * user and the body by its device; for join, the body by the invite key named in it.
 */
export async function verifyRecordSignature(rec: SignedRecord): Promise<boolean> {
  const payload = recordSigningPayload(rec.kind, rec.body)
  if (rec.kind === RecordKind.Join) {
    const join = readJoinBody(rec.body)
    if (!(await verifyCertificate(join.joiner))) return false
    return verifyWithDomain(SignatureDomain.Join, join.invitePub, payload, rec.signature)
  }
  if (!rec.signer || !(await verifyCertificate(rec.signer))) return false
  return verifyWithDomain(domainOf(rec.kind), rec.signer.devicePub, payload, rec.signature)
}

export function encodeGenesisBody(b: GenesisBody): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, b.room)
  encoding.writeVarUint8Array(e, b.nonce)
  encoding.writeVarUint(e, b.createdAt)
  return encoding.toUint8Array(e)
}
export function readGenesisBody(bytes: Uint8Array): GenesisBody {
  const r = new StrictReader(bytes)
  const out = { room: r.varString(64), nonce: r.varBytes(16), createdAt: r.varUint() }
  r.end()
  if (out.nonce.length !== 16) throw malformed('genesis nonce must be 16 bytes')
  return out
}

export function encodeInviteBody(b: InviteBody): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, b.room)
  encoding.writeVarUint8Array(e, b.invitePub)
  encoding.writeVarUint(e, b.expiresAt)
  encoding.writeVarUint(e, b.maxUses)
  encoding.writeVarUint(e, b.history === 'full' ? 0 : 1)
  encoding.writeVarUint(e, b.createdAt)
  return encoding.toUint8Array(e)
}
export function readInviteBody(bytes: Uint8Array): InviteBody {
  const r = new StrictReader(bytes)
  const room = r.varString(64)
  const invitePub = key32(r)
  const expiresAt = r.varUint()
  const maxUses = r.varUint()
  const history = r.varUint(1) === 0 ? 'full' : 'from-join'
  const createdAt = r.varUint()
  r.end()
  return { room, invitePub, expiresAt, maxUses, history, createdAt }
}

export function encodeJoinBody(b: { room: string; invitePub: Uint8Array; joiner: Uint8Array; joinedAt: number }) {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, b.room)
  encoding.writeVarUint8Array(e, b.invitePub)
  encoding.writeVarUint8Array(e, b.joiner)
  encoding.writeVarUint(e, b.joinedAt)
  return encoding.toUint8Array(e)
}
export function readJoinBody(bytes: Uint8Array): JoinBody {
  const r = new StrictReader(bytes)
  const room = r.varString(64)
  const invitePub = key32(r)
  const joiner = readCertificate(r.varBytes(1024))
  const joinedAt = r.varUint()
  r.end()
  return { room, invitePub, joiner, joinedAt }
}

/** The room id a genesis nonce and creator produce; binds a room to its creator. */
export function roomIdFor(nonce: Uint8Array, creatorUserPub: Uint8Array): string {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, 'petrel/v1/room')
  encoding.writeVarUint8Array(e, nonce)
  encoding.writeVarUint8Array(e, creatorUserPub)
  return toBase64Url(sha256(encoding.toUint8Array(e))).slice(0, 22)
}

export const AdmissionKind = { None: 0, Genesis: 1, Join: 2 } as const

export type Admission =
  | { kind: typeof AdmissionKind.None }
  | { kind: typeof AdmissionKind.Genesis; genesis: Uint8Array }
  | { kind: typeof AdmissionKind.Join; invite: Uint8Array; join: Uint8Array }

export function encodeAdmission(a: Admission): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, a.kind)
  if (a.kind === AdmissionKind.Genesis) encoding.writeVarUint8Array(e, a.genesis)
  if (a.kind === AdmissionKind.Join) {
    encoding.writeVarUint8Array(e, a.invite)
    encoding.writeVarUint8Array(e, a.join)
  }
  return encoding.toUint8Array(e)
}

export function readAdmission(bytes: Uint8Array): Admission {
  if (bytes.length === 0) return { kind: AdmissionKind.None }
  const r = new StrictReader(bytes)
  const kind = r.varUint(2)
  let a: Admission
  if (kind === AdmissionKind.Genesis) a = { kind, genesis: r.varBytes(16 * 1024) }
  else if (kind === AdmissionKind.Join) a = { kind, invite: r.varBytes(16 * 1024), join: r.varBytes(16 * 1024) }
  else a = { kind: AdmissionKind.None }
  r.end()
  return a
}

export interface MemberChangeBody {
  room: string
  userPub: Uint8Array
  at: number
}
export function encodeMemberChangeBody(b: MemberChangeBody): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, b.room)
  encoding.writeVarUint8Array(e, b.userPub)
  encoding.writeVarUint(e, b.at)
  return encoding.toUint8Array(e)
}
export function readMemberChangeBody(bytes: Uint8Array): MemberChangeBody {
  const r = new StrictReader(bytes)
  const out = { room: r.varString(64), userPub: key32(r), at: r.varUint() }
  r.end()
  return out
}

export interface RevokeBody {
  room: string
  invitePub: Uint8Array
  at: number
}
export function encodeRevokeBody(b: RevokeBody): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, b.room)
  encoding.writeVarUint8Array(e, b.invitePub)
  encoding.writeVarUint(e, b.at)
  return encoding.toUint8Array(e)
}
export function readRevokeBody(bytes: Uint8Array): RevokeBody {
  const r = new StrictReader(bytes)
  const out = { room: r.varString(64), invitePub: key32(r), at: r.varUint() }
  r.end()
  return out
}

export interface EpochBody {
  room: string
  epoch: number
  at: number
  keyCheck: Uint8Array
  /** devicePub (base64url) → wrapped key */
  wrapped: Map<string, Uint8Array>
}
export function encodeEpochBody(b: {
  room: string
  epoch: number
  at: number
  keyCheck: Uint8Array
  wrapped: Array<[devicePub: Uint8Array, wrapped: Uint8Array]>
}): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, b.room)
  encoding.writeVarUint(e, b.epoch)
  encoding.writeVarUint(e, b.at)
  encoding.writeVarUint8Array(e, b.keyCheck)
  encoding.writeVarUint(e, b.wrapped.length)
  for (const [device, wrapped] of b.wrapped) {
    encoding.writeVarUint8Array(e, device)
    encoding.writeVarUint8Array(e, wrapped)
  }
  return encoding.toUint8Array(e)
}
export function readEpochBody(bytes: Uint8Array): EpochBody {
  const r = new StrictReader(bytes)
  const room = r.varString(64)
  const epoch = r.varUint(0xffffffff)
  const at = r.varUint()
  const keyCheck = r.varBytes(8)
  if (keyCheck.length !== 8) throw malformed('key check must be 8 bytes')
  const n = r.varUint(4096)
  const wrapped = new Map<string, Uint8Array>()
  for (let i = 0; i < n; i++) wrapped.set(toBase64Url(key32(r)), r.varBytes(256))
  r.end()
  return { room, epoch, at, keyCheck, wrapped }
}

/** Context bound into every wrapped epoch key. */
export function epochWrapContext(room: string, epoch: number): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, room)
  encoding.writeVarUint(e, epoch)
  return encoding.toUint8Array(e)
}

export interface AddBody {
  room: string
  userPub: Uint8Array
  epoch: number
  keyCheck: Uint8Array
  at: number
  devices: Array<{ certificate: DeviceCertificate; keyBundle: Uint8Array }>
}
export function encodeAddBody(b: {
  room: string
  userPub: Uint8Array
  epoch: number
  keyCheck: Uint8Array
  at: number
  devices: Array<{ certificate: Uint8Array; keyBundle: Uint8Array }>
}): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, b.room)
  encoding.writeVarUint8Array(e, b.userPub)
  encoding.writeVarUint(e, b.epoch)
  encoding.writeVarUint8Array(e, b.keyCheck)
  encoding.writeVarUint(e, b.at)
  encoding.writeVarUint(e, b.devices.length)
  for (const d of b.devices) {
    encoding.writeVarUint8Array(e, d.certificate)
    encoding.writeVarUint8Array(e, d.keyBundle)
  }
  return encoding.toUint8Array(e)
}
/** At most this many devices per add: a person's devices, not a crowd. */
export const MAX_ADD_DEVICES = 16
export function readAddBody(bytes: Uint8Array): AddBody {
  const r = new StrictReader(bytes)
  const room = r.varString(64)
  const userPub = key32(r)
  const epoch = r.varUint(0xffffffff)
  const keyCheck = r.varBytes(8)
  if (keyCheck.length !== 8) throw malformed('key check must be 8 bytes')
  const at = r.varUint()
  const n = r.varUint(MAX_ADD_DEVICES)
  if (n === 0) throw malformed('an add names at least one device')
  const devices: AddBody['devices'] = []
  for (let i = 0; i < n; i++) devices.push({ certificate: readCertificate(r.varBytes(1024)), keyBundle: r.varBytes(16 * 1024) })
  r.end()
  return { room, userPub, epoch, keyCheck, at, devices }
}

export interface UnlinkBody {
  room: string
  devicePub: Uint8Array
  at: number
}
export function encodeUnlinkBody(b: UnlinkBody): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, b.room)
  encoding.writeVarUint8Array(e, b.devicePub)
  encoding.writeVarUint(e, b.at)
  return encoding.toUint8Array(e)
}
export function readUnlinkBody(bytes: Uint8Array): UnlinkBody {
  const r = new StrictReader(bytes)
  const out = { room: r.varString(64), devicePub: key32(r), at: r.varUint() }
  r.end()
  return out
}

export interface SnapshotBody {
  room: string
  coversSeq: number
  snapshotId: Uint8Array
  parts: number
  at: number
}
export function encodeSnapshotBody(b: SnapshotBody): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, b.room)
  encoding.writeVarUint(e, b.coversSeq)
  encoding.writeVarUint8Array(e, b.snapshotId)
  encoding.writeVarUint(e, b.parts)
  encoding.writeVarUint(e, b.at)
  return encoding.toUint8Array(e)
}
export function readSnapshotBody(bytes: Uint8Array): SnapshotBody {
  const r = new StrictReader(bytes)
  const room = r.varString(64)
  const coversSeq = r.varUint()
  const snapshotId = r.varBytes(16)
  if (snapshotId.length !== 16) throw malformed('snapshot id must be 16 bytes')
  const parts = r.varUint(100_000)
  const at = r.varUint()
  r.end()
  return { room, coversSeq, snapshotId, parts, at }
}
