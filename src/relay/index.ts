/** petrel/relay — the blind relay. */
export { createRelayApp } from './app.js'
export { defaultLimits, type RelayLimits } from './limits.js'
export type { Logger, LogLevel } from './log.js'
export { RelayMetrics } from './metrics.js'
export { createRelay, type Relay, type RelayOptions } from './relay.js'
export type { AppendBatch, RelayStore, RoomSnapshot, Row } from './store/relay-store.js'
export { openSqliteRelayStore } from './store/sqlite-store.js'
