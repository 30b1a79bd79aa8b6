/**
 * The other devices of this device's person, as far as this device knows: learned when it
 * was linked (or linked another), from the conversations it is in (a device of our person
 * there carries a certificate signed by our identity key), and unlinked ones for good. The
 * client uses it to keep every device of a person in every conversation the person is in.
 *
 * ```
 * devices := uint8 2 • varUint n • { varUint8Array deviceCertificate • uint8 unlinked(0|1) }{n}
 *            • varString primaryDeviceId ('' when unknown)
 * ```
 * Version 1 (without the primary) is read as well. The primary is the device that holds the
 * identity key: it links devices and cannot be unlinked.
 */
import * as encoding from 'lib0/encoding'
import { constantTimeEqual, toBase64Url } from '../shared/crypto/index.js'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { type DeviceCertificate, readCertificate } from '../shared/records.js'
import { StrictReader } from '../shared/wire.js'
import type { DeviceStore } from './storage/device-store.js'

const KEY = 'devices'
const VERSION = 2

export class DeviceBook {
  private readonly certs = new Map<string, DeviceCertificate>()
  private readonly unlinked = new Set<string>()
  /** The device holding the identity key, when known (always on that device itself). */
  primary: string | undefined

  private constructor(
    private readonly store: DeviceStore,
    private readonly userPub: Uint8Array,
  ) {}

  static async load(store: DeviceStore, own: DeviceCertificate): Promise<DeviceBook> {
    const book = new DeviceBook(store, own.userPub)
    const bytes = await store.get(KEY)
    if (bytes) {
      const r = new StrictReader(bytes)
      const version = r.uint8()
      if (version !== 1 && version !== VERSION) throw new PetrelError(ErrorCode.VersionMismatch, 'stored device list has an unknown format version')
      const n = r.varUint(1 << 16)
      for (let i = 0; i < n; i++) {
        const cert = readCertificate(r.varBytes(1024))
        const id = toBase64Url(cert.devicePub)
        book.certs.set(id, cert)
        if (r.uint8() === 1) book.unlinked.add(id)
      }
      if (version >= 2) book.primary = r.varString(64) || undefined
    }
    book.certs.set(toBase64Url(own.devicePub), own)
    return book
  }

  /** Remember a device of our person; true when it is news. Certificates must be verified. */
  learn(cert: DeviceCertificate): boolean {
    if (!constantTimeEqual(cert.userPub, this.userPub)) return false
    const id = toBase64Url(cert.devicePub)
    if (this.certs.has(id)) return false
    this.certs.set(id, cert)
    return true
  }

  /** This device is out for good; true when it is news. */
  unlink(id: string): boolean {
    if (!this.certs.has(id) || this.unlinked.has(id)) return false
    this.unlinked.add(id)
    return true
  }

  has(id: string): boolean {
    return this.certs.has(id)
  }

  isUnlinked(id: string): boolean {
    return this.unlinked.has(id)
  }

  /** Devices still linked (this one included). */
  current(): DeviceCertificate[] {
    return [...this.certs].filter(([id]) => !this.unlinked.has(id)).map(([, c]) => c)
  }

  save(): Promise<void> {
    const e = encoding.createEncoder()
    encoding.writeUint8(e, VERSION)
    encoding.writeVarUint(e, this.certs.size)
    for (const [id, cert] of this.certs) {
      encoding.writeVarUint8Array(e, cert.bytes)
      encoding.writeUint8(e, this.unlinked.has(id) ? 1 : 0)
    }
    encoding.writeVarString(e, this.primary ?? '')
    return this.store.commit({ put: [[KEY, encoding.toUint8Array(e)]] })
  }
}
