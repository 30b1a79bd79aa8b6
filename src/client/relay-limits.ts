/**
 * The limits the relay advertised in its last hello, kept on the device so that sends sealed
 * offline after a restart already respect them.
 *
 * ```
 * relay-limits := uint8 version(1) • varUint maxFrameBytes • varUint maxEnvelopeBytes
 * ```
 */
import * as encoding from 'lib0/encoding'
import { ErrorCode, PetrelError } from '../shared/errors.js'
import { StrictReader } from '../shared/wire.js'

/** Device-store key of the entry. */
export const RELAY_LIMITS_KEY = 'relay-limits'

export interface RelayLimits {
  maxFrameBytes: number
  maxEnvelopeBytes: number
}

export function encodeRelayLimits(limits: RelayLimits): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeUint8(e, 1)
  encoding.writeVarUint(e, limits.maxFrameBytes)
  encoding.writeVarUint(e, limits.maxEnvelopeBytes)
  return encoding.toUint8Array(e)
}

/** @throws PetrelError(version_mismatch | malformed) for an entry this build cannot read. */
export function decodeRelayLimits(bytes: Uint8Array): RelayLimits {
  const r = new StrictReader(bytes)
  const version = r.uint8()
  if (version !== 1) throw new PetrelError(ErrorCode.VersionMismatch, `stored relay limits have format version ${version}; this build reads 1`)
  const maxFrameBytes = r.varUint(2 ** 32)
  const maxEnvelopeBytes = r.varUint(2 ** 32)
  r.end()
  // Below these a relay could not carry a single message; such an entry is not to be trusted.
  if (maxFrameBytes < 4096 || maxEnvelopeBytes < 2048) throw new PetrelError(ErrorCode.Malformed, 'stored relay limits are implausibly small')
  return { maxFrameBytes, maxEnvelopeBytes }
}
