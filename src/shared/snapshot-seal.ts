/**
 * The second lock on a history snapshot. Snapshot parts travel in ordinary envelopes, sealed
 * under the current epoch's key — which a 'from-join' member holds too, and a snapshot holds
 * everything said before they joined. So the snapshot itself is sealed under a key derived
 * from every epoch's key, the first to the current: only a device that holds the whole
 * history can open it.
 *
 * ```
 * key     := HKDF-SHA256(ikm = key₀ • key₁ • … • key_epoch, info = context, 32)     versions 3, 4
 *            HKDF-SHA256(ikm = key_epoch • key₀, info = context, 32)                versions 1, 2 (read only)
 * context := varString 'petrel/v1/snapshot' • varString room • varUint epoch
 * sealed  := uint8 version • varUint8Array nonce(24) • varUint8Array ciphertext   XChaCha20-Poly1305
 * version 1, 3: ciphertext of the state;                                AAD = context (1), context • uint8 3 (3)
 * version 2, 4: ciphertext of varUint stateLength • deflateRaw(state);  AAD = context • uint8 version
 * ```
 * Versions 3 and 4 (the thirty-eighth session) are written; 1 and 2 are still read. Before,
 * the key mixed the current epoch's key and the first's alone: a member removed and let back
 * in 'from-join' keeps the first key from before and gets the current one, and opened a
 * snapshot holding what was said while they were out. Readers open any version only holding
 * every key up to its epoch (so that rule also holds for snapshots written before, on honest
 * devices). Version 2's and 4's compression is where the platform compresses
 * (snapshot-deflate.ts); each version's byte is in its AAD (1's excepted, which is older), so
 * a sealed snapshot cannot be passed off as another version.
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

/**
 * Every key from the first epoch's to `epoch`'s, in order: what it takes to seal or open a
 * snapshot at `epoch`. Undefined when this device lacks any of them (it joined 'from-join',
 * or was away, removed, for some epochs): it does not hold the whole history.
 *
 * @example const keys = historyKeys(heldKeys, epoch); if (keys) await sealSnapshot(state, room, epoch, keys)
 */
export function historyKeys(keys: ReadonlyMap<number, Uint8Array>, epoch: number): Uint8Array[] | undefined {
  const out: Uint8Array[] = []
  for (let e = 0; e <= epoch; e++) {
    const key = keys.get(e)
    if (!key) return undefined
    out.push(key)
  }
  return out
}

/** Versions 3 and 4: every key of the history. */
function wholeHistoryKey(context: Uint8Array, keys: readonly Uint8Array[]): Uint8Array {
  const ikm = new Uint8Array(32 * keys.length)
  for (let i = 0; i < keys.length; i++) ikm.set(keys[i]!, 32 * i)
  return hkdf(ikm, undefined, context, 32)
}

/** Versions 1 and 2 (read only): the epoch's key and the first's. */
function firstAndCurrentKey(context: Uint8Array, epochKey: Uint8Array, firstKey: Uint8Array): Uint8Array {
  const ikm = new Uint8Array(64)
  ikm.set(epochKey)
  ikm.set(firstKey, 32)
  return hkdf(ikm, undefined, context, 32)
}

const checkKeys = (keys: readonly Uint8Array[], epoch: number) => {
  if (keys.length !== epoch + 1 || keys.some((k) => k.length !== 32)) throw new PetrelError(ErrorCode.InvalidArgument, `a snapshot at epoch ${epoch} takes the ${epoch + 1} keys of epochs 0 to ${epoch}`)
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
 * @example const sealed = await sealSnapshot(state, room, epoch, historyKeys(keys, epoch)!)
 */
export async function sealSnapshot(
  state: Uint8Array | DeflatedState,
  room: string,
  epoch: number,
  keys: readonly Uint8Array[],
  pause?: () => Promise<unknown>,
  compress = canDeflate,
): Promise<Uint8Array> {
  checkKeys(keys, epoch)
  const context = contextOf(room, epoch)
  let plain: Uint8Array
  let version = 3
  if (!(state instanceof Uint8Array) || compress) {
    const { deflated, length } = state instanceof Uint8Array ? { deflated: await deflateState(state, undefined, pause), length: state.length } : state
    const e = encoding.createEncoder()
    encoding.writeVarUint(e, length)
    const head = encoding.toUint8Array(e)
    plain = new Uint8Array(head.length + deflated.length)
    plain.set(head)
    plain.set(deflated, head.length)
    version = 4
  } else plain = state
  const aad = versionedContext(context, version)
  const nonce = randomNonce()
  const e = encoding.createEncoder()
  encoding.writeUint8(e, version)
  encoding.writeVarUint8Array(e, nonce)
  encoding.writeVarUint(e, plain.length + AEAD_TAG_LENGTH)
  const head = encoding.toUint8Array(e)
  const sealed = new Uint8Array(head.length + plain.length + AEAD_TAG_LENGTH)
  sealed.set(head)
  await sealInSteps(wholeHistoryKey(context, keys), nonce, plain, aad, sealed, head.length, undefined, pause)
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

/** A snapshot opened with its keys: the state (versions 1, 3), or the state still deflated (2, 4; {@link inflateSnapshot}). */
export type OpenedSnapshot = { state: Uint8Array } | DeflatedState

/**
 * Decrypt a sealed snapshot with the keys of epochs 0 to `epoch` ({@link historyKeys}); a
 * PetrelError (envelope_rejected) when it does not open with them.
 */
export function openSnapshot(sealed: Uint8Array, room: string, epoch: number, keys: readonly Uint8Array[]): OpenedSnapshot {
  checkKeys(keys, epoch)
  const context = contextOf(room, epoch)
  const r = new StrictReader(sealed)
  const version = r.uint8()
  if (version < 1 || version > 4) throw new PetrelError(ErrorCode.VersionMismatch, `unknown snapshot seal version ${version}`)
  const nonce = r.varBytes(24)
  const ciphertext = r.varBytes(sealed.length)
  r.end()
  let plain: Uint8Array
  try {
    const key = version >= 3 ? wholeHistoryKey(context, keys) : firstAndCurrentKey(context, keys[epoch]!, keys[0]!)
    plain = open(key, nonce, ciphertext, version === 1 ? context : versionedContext(context, version))
  } catch (cause) {
    throw new PetrelError(ErrorCode.EnvelopeRejected, 'snapshot does not open', { cause })
  }
  if (version === 1 || version === 3) return { state: plain }
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
