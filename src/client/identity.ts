/**
 * A device's keys. The user identity key is created with the first device and signs device
 * certificates; each device has its own Ed25519 signing key and X25519 agreement key. All
 * stay in local storage and never leave the device.
 *
 * ```
 * identity := uint8 1 • varUint8Array userSecret(32) • varUint8Array deviceSecret(32)
 *             • varUint8Array agreementSecret(32) • varUint8Array certificate
 * ```
 */
import * as encoding from 'lib0/encoding'
import {
  agreementPublicKeyFromSecret,
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
const IDENTITY_VERSION = 1

export interface Identity {
  userId: string
  deviceId: string
  userPub: Uint8Array
  userSecret: Uint8Array
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
  const e = encoding.createEncoder()
  encoding.writeUint8(e, IDENTITY_VERSION)
  encoding.writeVarUint8Array(e, user.secretKey)
  encoding.writeVarUint8Array(e, device.secretKey)
  encoding.writeVarUint8Array(e, agreement.secretKey)
  encoding.writeVarUint8Array(e, certBytes)
  const bytes = encoding.toUint8Array(e)
  await store.commit({ put: [[IDENTITY_KEY, bytes]] })
  return decodeIdentity(bytes)
}

function decodeIdentity(bytes: Uint8Array): Identity {
  const r = new StrictReader(bytes)
  const version = r.uint8()
  if (version !== IDENTITY_VERSION) throw new PetrelError(ErrorCode.VersionMismatch, `stored identity version ${version} is not supported`)
  const userSecret = r.varBytes(32)
  const deviceSecret = r.varBytes(32)
  const agreementSecret = r.varBytes(32)
  const certificate = readCertificate(r.varBytes(1024))
  const userPub = publicKeyFromSecret(userSecret)
  const devicePub = publicKeyFromSecret(deviceSecret)
  return {
    userId: toBase64Url(userPub),
    deviceId: toBase64Url(devicePub),
    userPub,
    userSecret,
    devicePub,
    deviceSecret,
    agreementPub: agreementPublicKeyFromSecret(agreementSecret),
    agreementSecret,
    certificate,
  }
}
