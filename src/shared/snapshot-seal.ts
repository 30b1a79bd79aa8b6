/**
 * The second lock on a history snapshot. Snapshot parts travel in ordinary envelopes, sealed
 * under the current epoch's key — which a 'from-join' member holds too, and a snapshot holds
 * everything said before they joined. So the snapshot itself is sealed under a key derived
 * from the current epoch's key and the first epoch's: only members with the full history
 * have both (a 'from-join' member lacks the first, a removed one the current).
 *
 * ```
 * key    := HKDF-SHA256(ikm = epochKey • firstEpochKey, info = context, 32)
 * context := varString 'petrel/v1/snapshot' • varString room • varUint epoch
 * sealed := uint8 1 • varUint8Array nonce(24) • varUint8Array ciphertext   XChaCha20-Poly1305, AAD = context
 * ```
 */
import * as encoding from 'lib0/encoding'
import { AEAD_TAG_LENGTH, hkdf, open, randomNonce, sealInSteps } from './crypto/index.js'
import { ErrorCode, PetrelError } from './errors.js'
import { StrictReader } from './wire.js'

const contextOf = (room: string, epoch: number) => {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, 'petrel/v1/snapshot')
  encoding.writeVarString(e, room)
  encoding.writeVarUint(e, epoch)
  return encoding.toUint8Array(e)
}

function keyOf(context: Uint8Array, epochKey: Uint8Array, firstKey: Uint8Array): Uint8Array {
  const ikm = new Uint8Array(64)
  ikm.set(epochKey)
  ikm.set(firstKey, 32)
  return hkdf(ikm, undefined, context, 32)
}

/**
 * Seal a snapshot's inner state as above, encrypting a step (256 KiB) per turn where the
 * platform's cipher streams (sealing 5 MB at once held the thread ~40 ms), straight into the
 * sealed layout (no second copy of the ciphertext). `pause` runs between steps (default: a
 * turn of the event loop).
 *
 * @example const sealed = await sealSnapshot(state, room, epoch, epochKey, firstKey)
 */
export async function sealSnapshot(
  state: Uint8Array,
  room: string,
  epoch: number,
  epochKey: Uint8Array,
  firstKey: Uint8Array,
  pause?: () => Promise<unknown>,
): Promise<Uint8Array> {
  const context = contextOf(room, epoch)
  const nonce = randomNonce()
  const e = encoding.createEncoder()
  encoding.writeUint8(e, 1)
  encoding.writeVarUint8Array(e, nonce)
  encoding.writeVarUint(e, state.length + AEAD_TAG_LENGTH)
  const head = encoding.toUint8Array(e)
  const sealed = new Uint8Array(head.length + state.length + AEAD_TAG_LENGTH)
  sealed.set(head)
  await sealInSteps(keyOf(context, epochKey, firstKey), nonce, state, context, sealed, head.length, undefined, pause)
  return sealed
}

/** The inner state; a PetrelError (envelope_rejected) when it does not open with these keys. */
export function openSnapshot(sealed: Uint8Array, room: string, epoch: number, epochKey: Uint8Array, firstKey: Uint8Array): Uint8Array {
  const context = contextOf(room, epoch)
  const r = new StrictReader(sealed)
  if (r.uint8() !== 1) throw new PetrelError(ErrorCode.VersionMismatch, 'unknown snapshot seal version')
  const nonce = r.varBytes(24)
  const ciphertext = r.varBytes(sealed.length)
  r.end()
  try {
    return open(keyOf(context, epochKey, firstKey), nonce, ciphertext, context)
  } catch (cause) {
    throw new PetrelError(ErrorCode.EnvelopeRejected, 'snapshot does not open', { cause })
  }
}
