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
}

export const defaultLimits: RelayLimits = {
  maxFrameBytes: 1024 * 1024,
  maxEnvelopeBytes: 256 * 1024,
  authTimeoutMs: 10_000,
  maxRoomsPerConnection: 10_000,
  heartbeatMs: 10_000,
  idleTimeoutMs: 45_000,
}
