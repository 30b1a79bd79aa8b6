/**
 * Typed errors with a stable `code`, so apps can branch on the code rather than parse messages.
 *
 * @example
 * ```ts
 * client.on('error', (err) => { if (err.code === 'envelope_rejected') console.warn(err.message) })
 * ```
 */
export const ErrorCode = {
  /** Bytes from the network or disk did not parse (wrong shape, truncated, out of bounds). */
  Malformed: 'malformed',
  /** A signature did not verify or an envelope did not decrypt/authenticate. */
  EnvelopeRejected: 'envelope_rejected',
  /** A well-formed, authenticated update broke an authorship rule (edited another member's message, reused a client id). */
  AuthorshipViolation: 'authorship_violation',
  /** Sender is not a known member device. */
  UnknownSender: 'unknown_sender',
  /** A payload is larger than the configured limit. */
  TooLarge: 'too_large',
  /** Protocol or format version this build does not speak. */
  VersionMismatch: 'version_mismatch',
  /** The relay refused an action (not a member, invite invalid, …). */
  Refused: 'refused',
  /** Invite token could not be used (malformed, expired, used up, revoked). */
  InviteInvalid: 'invite_invalid',
  /** Local storage failed (quota exceeded, disk full, I/O error). Nothing stored earlier is lost. */
  StorageFailed: 'storage_failed',
  /** Decoding an inner update exceeded its time or memory budget. */
  BudgetExceeded: 'budget_exceeded',
  /** The client or relay is closed. */
  Closed: 'closed',
  /** Argument from the app is invalid. */
  InvalidArgument: 'invalid_argument',
  /** No such message / conversation. */
  NotFound: 'not_found',
  /** Another tab (or window) of this browser profile runs the engine on this device's storage. */
  DeviceInUse: 'device_in_use',
  /** Linking a device did not complete (the link expired, was used already, or the relay was unreachable). */
  LinkFailed: 'link_failed',
} as const

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode]

/** The one error type Petrel throws or reports; `code` is stable across versions. */
export class PetrelError extends Error {
  readonly code: ErrorCode
  /** Conversation the error concerns, when there is one. */
  readonly conversationId: string | undefined
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; conversationId?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'PetrelError'
    this.code = code
    this.conversationId = options?.conversationId
  }
}

/** True when `err` is a PetrelError, optionally with the given code. */
export const isPetrelError = (err: unknown, code?: ErrorCode): err is PetrelError =>
  err instanceof PetrelError && (code === undefined || err.code === code)
