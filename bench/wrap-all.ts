/**
 * A new epoch's key wrapped for every member device (membership-book.ts `newEpoch`, at each key
 * rotation: every 1,000 messages): `wrapKeyForAll`, one ephemeral key for all the devices,
 * against a `wrapKey` per device with an ephemeral key each (what `newEpoch` did until the
 * twenty-eighth session), in the same run, on this platform's X25519 (`x25519Backend`).
 */
import { generateAgreementKeyPair, randomKey, wrapKey, wrapKeyForAll, x25519Backend } from '../src/shared/crypto/index.js'
import { median } from './common.js'

export interface WrapAllResult {
  backend: 'node' | 'noble'
  /** ms to wrap one key for N devices, by N: one ephemeral key, and one per device. */
  byDevices: Array<{ devices: number; ms: number; referenceMs: number }>
}

export function wrapAll(counts = [10, 100, 1000], rounds = 5): WrapAllResult {
  const context = new TextEncoder().encode('room/epoch')
  const byDevices: WrapAllResult['byDevices'] = []
  for (const devices of counts) {
    const pubs = Array.from({ length: devices }, () => generateAgreementKeyPair().publicKey)
    const ours: number[] = []
    const reference: number[] = []
    // Alternating rounds; the first warms the code up and is not kept.
    for (let r = 0; r <= rounds; r++) {
      const key = randomKey()
      let t0 = performance.now()
      const all = wrapKeyForAll(key, pubs, context)
      const a = performance.now() - t0
      t0 = performance.now()
      const each = pubs.map((pub) => wrapKey(key, pub, context))
      const b = performance.now() - t0
      if (all.length !== devices || each.length !== devices) throw new Error('wrap-all: a device was left out')
      if (r > 0) {
        ours.push(a)
        reference.push(b)
      }
    }
    byDevices.push({ devices, ms: median(ours), referenceMs: median(reference) })
  }
  return { backend: x25519Backend(), byDevices }
}
