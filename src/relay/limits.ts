/** Abuse limits with safe defaults; every one is configurable through `createRelay`. */
export interface RelayLimits {
  /** Largest WebSocket message accepted; larger closes with 1009 (ws `maxPayload`). */
  maxFrameBytes: number
  /** Largest sealed envelope stored; larger ones are refused for good (status `failed`). */
  maxEnvelopeBytes: number
  /** Unauthenticated sockets are closed after this long. */
  authTimeoutMs: number
  /** Rooms one connection may have open at once. */
  maxRoomsPerConnection: number
  /** The relay sends a heartbeat this often; clients treat 3 missed beats as a dead socket. */
  heartbeatMs: number
  /** A connection that sent nothing for this long (no heartbeat either) is closed. */
  idleTimeoutMs: number
  /** Frames per second one connection may send on average (token bucket)… */
  framesPerSecond: number
  /** …with bursts up to this many; past it frames are dropped, and at twice it the socket is closed (4429). */
  frameBurst: number
  /** Open WebSockets per client IP address; more are answered with HTTP 429. */
  maxConnectionsPerIp: number
  /**
   * Bytes stored per conversation; envelopes past it are refused (the sender sees `failed`).
   * Signed records (membership, keys) may go past it by {@link recordAllowance}, so a full
   * conversation can still remove a member; past that, nothing more is stored.
   */
  maxRoomBytes: number
  /** An HTTP request (including a WebSocket upgrade) must send its headers within this (slowloris). */
  headersTimeoutMs: number
  /**
   * Bytes waiting to be written to one connection (its socket not reading them) past which it
   * is cut off: a device that stops reading cannot make the relay hold its sends without end.
   */
  maxSendBufferBytes: number
  /** A catch-up waits this long at most for a connection to read what it was sent before it is cut off. */
  sendStallMs: number
}

export const defaultLimits: RelayLimits = {
  maxFrameBytes: 1024 * 1024,
  maxEnvelopeBytes: 256 * 1024,
  authTimeoutMs: 10_000,
  maxRoomsPerConnection: 10_000,
  heartbeatMs: 10_000,
  idleTimeoutMs: 45_000,
  framesPerSecond: 1_000,
  frameBurst: 5_000,
  maxConnectionsPerIp: 1_000,
  maxRoomBytes: 1024 * 1024 * 1024,
  headersTimeoutMs: 10_000,
  maxSendBufferBytes: 64 * 1024 * 1024,
  sendStallMs: 30_000,
}

/**
 * How far past `maxRoomBytes` a conversation's signed records may take it: a sixteenth of the
 * quota, and at least 64 KiB (a few hundred records). Membership changes in a full
 * conversation stay possible, while a member spamming records still meets a bound.
 *
 * @example
 * ```ts
 * recordAllowance({ maxRoomBytes: 1024 ** 3 }) // 64 MiB
 * ```
 */
export function recordAllowance(limits: Pick<RelayLimits, 'maxRoomBytes'>): number {
  return Math.max(64 * 1024, Math.floor(limits.maxRoomBytes / 16))
}
