/**
 * A person's public identity: what an admin needs to add them to a conversation directly
 * (`conv.addMember`) — their device certificates, each signed by their identity key. Public
 * keys only; safe to show as text or a QR code.
 *
 * ```
 * publicIdentity := 'petrel-id:' • base64url( uint8 1 • varUint n • { varUint8Array deviceCertificate }{n} )
 * ```
 */
import * as encoding from 'lib0/encoding'
import { constantTimeEqual, fromBase64Url, toBase64Url } from '../shared/crypto/index.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { type DeviceCertificate, MAX_ADD_DEVICES, readCertificate, verifyCertificate } from '../shared/records.js'
import { StrictReader } from '../shared/wire.js'

const PREFIX = 'petrel-id:'
const VERSION = 1

export function encodePublicIdentity(certs: DeviceCertificate[]): string {
  const e = encoding.createEncoder()
  encoding.writeUint8(e, VERSION)
  encoding.writeVarUint(e, certs.length)
  for (const c of certs) encoding.writeVarUint8Array(e, c.bytes)
  return PREFIX + toBase64Url(encoding.toUint8Array(e))
}

/** Parse and verify: every certificate signed by one and the same identity key. */
export async function readPublicIdentity(text: string): Promise<DeviceCertificate[]> {
  const bad = (m: string, cause?: unknown) => new PetrelError(ErrorCode.InvalidArgument, `not a Petrel identity: ${m}`, { cause })
  if (typeof text !== 'string' || !text.startsWith(PREFIX)) throw bad(`it must start with ${PREFIX}`)
  let certs: DeviceCertificate[]
  try {
    const r = new StrictReader(fromBase64Url(text.slice(PREFIX.length)))
    if (r.uint8() !== VERSION) throw bad('unknown format version (made by a newer Petrel?)')
    const n = r.varUint(MAX_ADD_DEVICES)
    certs = []
    for (let i = 0; i < n; i++) certs.push(readCertificate(r.varBytes(1024)))
    r.end()
  } catch (err) {
    if (err instanceof PetrelError && err.code === ErrorCode.InvalidArgument) throw err
    throw bad('malformed', err)
  }
  if (certs.length === 0) throw bad('it lists no device')
  for (const c of certs) {
    if (!constantTimeEqual(c.userPub, certs[0]!.userPub)) throw bad('devices of different people')
    if (!(await verifyCertificate(c))) throw bad('a device certificate is not signed by its identity key')
  }
  return certs
}
