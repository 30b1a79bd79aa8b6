/**
 * Whether a received envelope may be opened, and what becomes of it if not: the rules every
 * envelope the relay hands this device passes before anything of it reaches a document.
 *
 * The relay is untrusted, so each envelope is checked here, in this order:
 *
 * 1. its header parses (`checkEnvelopes`; a malformed one is reported and skipped);
 * 2. its sender is a device ever admitted to the conversation, else it is **held** (its join
 *    record may still be on its way: rows can arrive out of order);
 * 3. its signature verifies (checked natively, for a whole page at once), else **refused**;
 * 4. this device holds the epoch's key, else **held** (the key's record may still come);
 * 5. it names our key for the epoch, else it is **held** while the epoch's winner is unknown
 *    here or is not our key (we rotated at the same time as someone else and lost the race
 *    for the epoch number: the winner's record is on its way); under epoch 0 (one key for
 *    everyone), or once the winner is our key, it goes on and the decryption refuses it;
 * 6. it was sealed before the next epoch began (the relay's row order says), else **refused**:
 *    a removed member's or a stale write;
 * 7. its nonce is new; a copy of one already opened is **skipped** (applied once), and another
 *    envelope reusing a nonce is **refused**;
 * 8. it decrypts and authenticates under the key, else **refused**;
 * 9. a row uploaded as a snapshot part holds a snapshot part, else **refused**: a message there
 *    would be a blank to the live devices the relay spared it, and their views would differ.
 *
 * What passes is opened; what the inner update may change is checked next (inner-guard.ts).
 * Held envelopes are kept (bounded) and tried again after the next membership change.
 */
import { constantTimeEqual, toBase64Url, verifyBatch } from '../shared/crypto/index.js'
import { type EnvelopeHeader, keyCheckOf, type Opened, openEnvelope, readEnvelope, signedEnvelopeBytes } from '../shared/envelope.js'
import { ErrorCode } from '../shared/errors.js'

/**
 * A received envelope: its outer key, the relay row that carried it, its bytes, and whether
 * that row was uploaded as a snapshot part (the relay's `rows` message names those).
 */
export interface IncomingEnvelope {
  key: string
  seq: number
  bytes: Uint8Array
  part?: boolean
}

/** Envelopes' headers (undefined: malformed) and whether each one's signature verifies. */
export interface CheckedEnvelopes {
  headers: Array<EnvelopeHeader | undefined>
  verdicts: boolean[]
}

/** What the rules read of the conversation. */
export interface AdmissionRules {
  readonly room: string
  /** Every device ever admitted (base64url) → its user: authors who left stay known. */
  readonly everDevices: ReadonlyMap<string, string>
  /** This device's key of each epoch it holds. */
  readonly keys: ReadonlyMap<number, Uint8Array>
  /** An admin is to give this device keys its invite could not carry (`devicesToWelcome`): asked only when a key is missing. */
  readonly awaitingWelcome: boolean
  /** The lowest epoch this device holds a key of (Infinity with none), when the caller keeps it; else read from `keys`. */
  readonly firstKeyEpoch?: number
  /** The key check of the record that won `epoch`, once folded here. */
  winnerKeyCheck(epoch: number): Uint8Array | undefined
  /** Whether an envelope of `epoch` in relay row `seq` came before the next epoch began. */
  sealedInTime(epoch: number, seq: number): boolean
  /** Nonces of the envelopes opened so far (`nonceKey`) → their signatures; asked for only when needed. */
  nonces(): ReadonlyMap<string, Uint8Array>
}

/** What became of one envelope. */
export type Admission =
  /** Its header did not parse: reported already, by `checkEnvelopes`. */
  | { kind: 'malformed' }
  /**
   * Kept to try again once the conversation's records explain it. `quiet`: expected, so not
   * worth an error event (history before this device's first key, or keys not here yet).
   */
  | { kind: 'hold'; code: ErrorCode; message: string; quiet?: true }
  /** Refused for good. */
  | { kind: 'refuse'; code: ErrorCode; message: string }
  /** A copy of an envelope already opened: it changes nothing. */
  | { kind: 'copy' }
  /** Opened. `nonce` is to be remembered once it is applied (`nonceKey`), with `signature`. */
  | { kind: 'open'; opened: Opened; deviceId: string; userId: string; epoch: number; nonce: string; signature: Uint8Array }

/**
 * Parse envelope headers and verify their signatures, natively and as one batch. A header
 * that does not parse is passed to `malformed` and left undefined.
 *
 * @example
 * ```ts
 * const { headers, verdicts } = await checkEnvelopes(roomId, envelopes, (err) => report(err))
 * ```
 */
export async function checkEnvelopes(room: string, envelopes: ReadonlyArray<{ bytes: Uint8Array }>, malformed: (err: unknown) => void): Promise<CheckedEnvelopes> {
  const headers = envelopes.map((e) => {
    try {
      return readEnvelope(e.bytes)
    } catch (err) {
      malformed(err)
      return undefined
    }
  })
  const verdicts = await verifyBatch(
    headers.map((h) =>
      h
        ? { publicKey: h.senderDevicePub, message: signedEnvelopeBytes(room, h), signature: h.signature }
        : { publicKey: new Uint8Array(32), message: new Uint8Array(0), signature: new Uint8Array(64) },
    ),
    { handOverMessages: true },
  )
  return { headers, verdicts }
}

/**
 * The rules above, for one envelope whose header and signature `checkEnvelopes` read. Pure
 * but for decrypting: nothing is remembered here (the caller notes the nonce once it applies).
 *
 * @example
 * ```ts
 * const a = admitEnvelope(rules, envelope, headers[i], verdicts[i])
 * if (a.kind === 'open') apply(a.opened)
 * else if (a.kind === 'hold') defer(envelope, a.code, a.message)
 * else if (a.kind === 'refuse') reject(a.code, a.message)
 * ```
 */
/** The lowest epoch of `keys` (Infinity when it holds none). */
export function lowestEpoch(keys: ReadonlyMap<number, unknown>): number {
  let first = Number.POSITIVE_INFINITY
  for (const e of keys.keys()) if (e < first) first = e
  return first
}

export function admitEnvelope(rules: AdmissionRules, envelope: IncomingEnvelope, h: EnvelopeHeader | undefined, verified: boolean | undefined): Admission {
  if (!h) return { kind: 'malformed' }
  const deviceId = deviceIdOf(h.senderDevicePub)
  const userId = rules.everDevices.get(deviceId)
  if (userId === undefined) return { kind: 'hold', code: ErrorCode.UnknownSender, message: `envelope from a device that is not a member (${deviceId.slice(0, 8)}…)` }
  if (!verified) return { kind: 'refuse', code: ErrorCode.EnvelopeRejected, message: 'envelope signature does not verify' }
  const key = rules.keys.get(h.epoch)
  if (!key) {
    // Before this device's first key: what a 'from-join' member never reads, by design (every
    // newcomer's app showed an error per catch-up for it), or a joiner's keys on their way, from
    // the relay or from an admin's welcome.
    const first = rules.firstKeyEpoch ?? lowestEpoch(rules.keys)
    const quiet = h.epoch < first || rules.awaitingWelcome
    return { kind: 'hold', code: ErrorCode.EnvelopeRejected, message: `no key for epoch ${h.epoch}`, ...(quiet ? { quiet: true as const } : {}) }
  }
  if (!constantTimeEqual(keyCheckOf(key), h.keyCheck)) {
    const winner = rules.winnerKeyCheck(h.epoch)
    if (h.epoch !== 0 && (winner === undefined || !constantTimeEqual(winner, keyCheckOf(key)))) {
      return { kind: 'hold', code: ErrorCode.EnvelopeRejected, message: `envelope sealed under another key for epoch ${h.epoch}` }
    }
  }
  if (!rules.sealedInTime(h.epoch, envelope.seq)) {
    return { kind: 'refuse', code: ErrorCode.EnvelopeRejected, message: `envelope sealed under epoch ${h.epoch} after epoch ${h.epoch + 1} began (a removed member's or stale write)` }
  }
  const nonce = nonceKey(h.nonce)
  const seen = rules.nonces().get(nonce)
  if (seen !== undefined) {
    return constantTimeEqual(seen, h.signature) ? { kind: 'copy' } : { kind: 'refuse', code: ErrorCode.EnvelopeRejected, message: `envelope reuses a nonce (sender ${deviceId.slice(0, 8)}…)` }
  }
  let opened: Opened
  try {
    opened = openEnvelope(rules.room, h, key)
  } catch (err) {
    return { kind: 'refuse', code: ErrorCode.EnvelopeRejected, message: `envelope does not decrypt: ${(err as Error).message}` }
  }
  if (envelope.part && opened.kind !== 'snapshot') {
    return { kind: 'refuse', code: ErrorCode.EnvelopeRejected, message: `envelope uploaded as a snapshot part holds something else (sender ${deviceId.slice(0, 8)}…): not applied` }
  }
  return { kind: 'open', opened, deviceId, userId, epoch: h.epoch, nonce, signature: h.signature }
}

/** A nonce as a map key: its bytes as char codes (no base64 work on the receive path). */
export const nonceKey = (nonce: Uint8Array): string => String.fromCharCode.apply(null, nonce as unknown as number[])

/** base64url of a device key; a batch is mostly from few senders, so the last one is kept. */
let lastDevice: { pub: Uint8Array; id: string } | undefined
export function deviceIdOf(pub: Uint8Array): string {
  if (lastDevice && constantTimeEqual(lastDevice.pub, pub)) return lastDevice.id
  const id = toBase64Url(pub)
  lastDevice = { pub: pub.slice(), id }
  return id
}
