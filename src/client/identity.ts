/**
 * A device's keys. The user identity key is created with the first device and signs device
 * certificates; each device has its own Ed25519 signing key and X25519 agreement key. All
 * stay in local storage and never leave the device.
 *
 * ```
 * identity := uint8 2 • varUint8Array userSecret(32, or empty on a linked device) • varUint8Array deviceSecret(32)
 *             • varUint8Array agreementSecret(32) • varUint8Array certificate
 * ```
 * Version 1 (always with the user secret) is read as well. A linked device never holds the
 * identity key: the device that does certified it, so a lost or unlinked device cannot
 * certify others.
 */
import * as encoding from 'lib0/encoding'
import {
  agreementPublicKeyFromSecret,
  constantTimeEqual,
  generateAgreementKeyPair,
  generateSigningKeyPair,
  publicKeyFromSecret,
  SignatureDomain,
  signWithDomain,
  toBase64Url,
} from '../shared/crypto/index.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { certificatePayload, encodeCertificate, type DeviceCertificate, readCertificate } from '../shared/records.js'
import { StrictReader } from '../shared/wire.js'
import type { DeviceStore } from './storage/device-store.js'

const IDENTITY_KEY = 'identity'
/** The person's name as a device link carried it (client.displayName), UTF-8. */
export const NAME_KEY = 'name'
const IDENTITY_VERSION = 2

export interface Identity {
  userId: string
  deviceId: string
  userPub: Uint8Array
  /** Only on the device that created the identity: it certifies linked devices. */
  userSecret: Uint8Array | undefined
  devicePub: Uint8Array
  deviceSecret: Uint8Array
  agreementPub: Uint8Array
  agreementSecret: Uint8Array
  certificate: DeviceCertificate
}

export async function loadOrCreateIdentity(store: DeviceStore): Promise<Identity> {
  const stored = await store.get(IDENTITY_KEY)
  if (stored) return decodeIdentity(stored)
  const user = generateSigningKeyPair()
  const device = generateSigningKeyPair()
  const agreement = generateAgreementKeyPair()
  const payload = certificatePayload(user.publicKey, device.publicKey, agreement.publicKey, Date.now())
  const certBytes = encodeCertificate(payload, await signWithDomain(SignatureDomain.DeviceCertificate, user.secretKey, payload))
  return storeIdentity(store, user.secretKey, device.secretKey, agreement.secretKey, certBytes)
}

/** Whether this storage already holds a device identity. */
export async function hasIdentity(store: DeviceStore): Promise<boolean> {
  return (await store.get(IDENTITY_KEY)) !== undefined
}

/**
 * Store the identity of a device linked to an existing person (no identity key), with `also`
 * in the same commit (what else the link gave, and the pending link cleared).
 */
export function storeLinkedIdentity(
  store: DeviceStore,
  deviceSecret: Uint8Array,
  agreementSecret: Uint8Array,
  certificate: Uint8Array,
  also: Array<[string, Uint8Array | null]> = [],
): Promise<Identity> {
  return storeIdentity(store, new Uint8Array(0), deviceSecret, agreementSecret, certificate, also)
}

async function storeIdentity(
  store: DeviceStore,
  userSecret: Uint8Array,
  deviceSecret: Uint8Array,
  agreementSecret: Uint8Array,
  certificate: Uint8Array,
  also: Array<[string, Uint8Array | null]> = [],
) {
  const e = encoding.createEncoder()
  encoding.writeUint8(e, IDENTITY_VERSION)
  encoding.writeVarUint8Array(e, userSecret)
  encoding.writeVarUint8Array(e, deviceSecret)
  encoding.writeVarUint8Array(e, agreementSecret)
  encoding.writeVarUint8Array(e, certificate)
  const bytes = encoding.toUint8Array(e)
  await store.commit({ put: [[IDENTITY_KEY, bytes], ...also] })
  return decodeIdentity(bytes)
}

function decodeIdentity(bytes: Uint8Array): Identity {
  const r = new StrictReader(bytes)
  const version = r.uint8()
  if (version !== 1 && version !== IDENTITY_VERSION) throw new PetrelError(ErrorCode.VersionMismatch, `stored identity version ${version} is not supported`)
  const userSecret = r.varBytes(32)
  const deviceSecret = r.varBytes(32)
  const agreementSecret = r.varBytes(32)
  const certificate = readCertificate(r.varBytes(1024))
  const userPub = certificate.userPub
  const devicePub = publicKeyFromSecret(deviceSecret)
  if (userSecret.length > 0 && !constantTimeEqual(publicKeyFromSecret(userSecret), userPub)) {
    throw new PetrelError(ErrorCode.Malformed, 'stored identity key does not match its certificate')
  }
  return {
    userId: toBase64Url(userPub),
    deviceId: toBase64Url(devicePub),
    userPub,
    userSecret: userSecret.length > 0 ? userSecret : undefined,
    devicePub,
    deviceSecret,
    agreementPub: agreementPublicKeyFromSecret(agreementSecret),
    agreementSecret,
    certificate,
  }
}
