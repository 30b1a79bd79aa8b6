/**
 * The second lock on a history snapshot. Snapshot parts travel in ordinary envelopes, sealed
 * under the current epoch's key — which a 'from-join' member holds too, and a snapshot holds
 * everything said before they joined. So the snapshot itself is sealed under a key derived
 * from the current epoch's key and the first epoch's: only members with the full history
 * have both (a 'from-join' member lacks the first, a removed one the current).
 *
 * ```
 * key     := HKDF-SHA256(ikm = epochKey • firstEpochKey, info = context, 32)
 * context := varString 'petrel/v1/snapshot' • varString room • varUint epoch
 * sealed  := uint8 version • varUint8Array nonce(24) • varUint8Array ciphertext   XChaCha20-Poly1305
 * version 1: ciphertext of the state;                                AAD = context
 * version 2: ciphertext of varUint stateLength • deflateRaw(state);  AAD = context • uint8 2
 * ```
 * Version 2 (since the fourteenth session) is written wherever the platform compresses
 * (snapshot-deflate.ts), version 1 elsewhere; both are read. Version 2's byte is in its AAD,
 * so a sealed snapshot cannot be passed off as the other version.
 */
import * as encoding from 'lib0/encoding'
import { AEAD_TAG_LENGTH, hkdf, open, randomNonce, sealInSteps } from './crypto/index.js'
import { ErrorCode, PetrelError } from './errors.js'
import { canDeflate, deflateState, inflateState, inflateStateSync } from './snapshot-deflate.js'
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
 * Seal a snapshot's inner state as above (compressed where the platform can), encrypting a
 * step (256 KiB) per turn where the platform's cipher streams (sealing 5 MB at once held the
 * thread ~40 ms), straight into the sealed layout (no second copy of the ciphertext). `pause`
 * runs between steps (default: a turn of the event loop).
 *
 * The state may come deflated already ({@link DeflatedState}, e.g. from the history replica's
 * thread): it is then sealed as version 2 as it is.
 *
 * @example const sealed = await sealSnapshot(state, room, epoch, epochKey, firstKey)
 */
export async function sealSnapshot(
  state: Uint8Array | DeflatedState,
  room: string,
  epoch: number,
  epochKey: Uint8Array,
  firstKey: Uint8Array,
  pause?: () => Promise<unknown>,
  compress = canDeflate,
): Promise<Uint8Array> {
  const context = contextOf(room, epoch)
  let plain: Uint8Array
  let aad = context
  let version = 1
  if (!(state instanceof Uint8Array) || compress) {
    const { deflated, length } = state instanceof Uint8Array ? { deflated: await deflateState(state, undefined, pause), length: state.length } : state
    const e = encoding.createEncoder()
    encoding.writeVarUint(e, length)
    const head = encoding.toUint8Array(e)
    plain = new Uint8Array(head.length + deflated.length)
    plain.set(head)
    plain.set(deflated, head.length)
    version = 2
    aad = versionedContext(context, version)
  } else plain = state
  const nonce = randomNonce()
  const e = encoding.createEncoder()
  encoding.writeUint8(e, version)
  encoding.writeVarUint8Array(e, nonce)
  encoding.writeVarUint(e, plain.length + AEAD_TAG_LENGTH)
  const head = encoding.toUint8Array(e)
  const sealed = new Uint8Array(head.length + plain.length + AEAD_TAG_LENGTH)
  sealed.set(head)
  await sealInSteps(keyOf(context, epochKey, firstKey), nonce, plain, aad, sealed, head.length, undefined, pause)
  return sealed
}

const versionedContext = (context: Uint8Array, version: number) => {
  const aad = new Uint8Array(context.length + 1)
  aad.set(context)
  aad[context.length] = version
  return aad
}

/** A snapshot's inner state raw-DEFLATEd (snapshot-deflate.ts's format), and the state's own length. */
export interface DeflatedState {
  deflated: Uint8Array
  length: number
}

/** A snapshot opened with its keys: the state (version 1), or the state still deflated (version 2; {@link inflateSnapshot}). */
export type OpenedSnapshot = { state: Uint8Array } | DeflatedState

/** Decrypt a sealed snapshot; a PetrelError (envelope_rejected) when it does not open with these keys. */
export function openSnapshot(sealed: Uint8Array, room: string, epoch: number, epochKey: Uint8Array, firstKey: Uint8Array): OpenedSnapshot {
  const context = contextOf(room, epoch)
  const r = new StrictReader(sealed)
  const version = r.uint8()
  if (version !== 1 && version !== 2) throw new PetrelError(ErrorCode.VersionMismatch, `unknown snapshot seal version ${version}`)
  const nonce = r.varBytes(24)
  const ciphertext = r.varBytes(sealed.length)
  r.end()
  let plain: Uint8Array
  try {
    plain = open(keyOf(context, epochKey, firstKey), nonce, ciphertext, version === 2 ? versionedContext(context, 2) : context)
  } catch (cause) {
    throw new PetrelError(ErrorCode.EnvelopeRejected, 'snapshot does not open', { cause })
  }
  if (version === 1) return { state: plain }
  const p = new StrictReader(plain)
  const length = p.varUint()
  return { deflated: p.rest(), length }
}

/** The state of an opened snapshot, inflated (bounded by its declared length) if need be. */
export async function inflateSnapshot(opened: OpenedSnapshot): Promise<Uint8Array> {
  return 'state' in opened ? opened.state : inflateState(opened.deflated, opened.length)
}

/** The state of an opened snapshot now, where that needs no inflating or the platform inflates synchronously; else undefined ({@link inflateSnapshot}). */
export function snapshotStateNow(opened: OpenedSnapshot): Uint8Array | undefined {
  return 'state' in opened ? opened.state : inflateStateSync(opened.deflated, opened.length)
}
