/**
 * The seam between the client engine and a device's durable storage (IndexedDB in browsers,
 * SQLite on Node). One engine owns one store; nothing else writes to it.
 *
 * Contract every implementation meets (checked by test/unit/device-store.conformance.ts):
 * - `commit` is atomic (all of a batch or none) and durable when its promise resolves: a crash
 *   or reload right after resolution keeps the batch. This is what lets `send()` resolve only
 *   once a message survives a reload.
 * - A failed write rejects with a `PetrelError` of code `storage_failed` (quota exceeded, disk
 *   full, I/O error) and leaves everything committed earlier intact.
 * - Reads return copies; callers may keep the arrays.
 */
export type DocName = 'outer' | 'inner'

export interface LogRow {
  /** Monotonic per store; order of appends. */
  id: number
  bytes: Uint8Array
}

export interface AppendOp {
  convId: string
  doc: DocName
  bytes: Uint8Array
}

/** Replace every log row of (convId, doc) with id <= throughId by one merged row. */
export interface CompactOp {
  convId: string
  doc: DocName
  throughId: number
  merged: Uint8Array
}

export interface Batch {
  /** Key-value writes; `null` deletes the key. */
  put?: Array<[key: string, value: Uint8Array | null]>
  append?: AppendOp[]
  compact?: CompactOp[]
}

/** How urgently a commit must land. */
export interface CommitOptions {
  /**
   * It may wait a little (the store's linger, 20 ms for ours) to share one transaction, and one
   * fsync, with later commits; an ordinary commit issued meanwhile takes it along at once, in
   * order. For writes that only an acknowledgement waits for: received rows (their ✓✓), the
   * stored cursor, ticks; and a batch of sends whose envelope went to the relay already (only
   * `send()` resolving waits for it). A device receiving a busy conversation otherwise paid a
   * transaction per received batch, a sending one a transaction per flush. A store may ignore
   * it and commit at once.
   */
  soon?: boolean
}

/** A commit that may wait for company (see CommitOptions.soon). */
export const COMMIT_SOON: CommitOptions = Object.freeze({ soon: true })

export interface DeviceStore {
  readonly kind: 'sqlite' | 'indexeddb'
  get(key: string): Promise<Uint8Array | undefined>
  /** Every key-value pair whose key starts with `prefix`, in key order. */
  list(prefix: string): Promise<Array<[string, Uint8Array]>>
  /** The log rows of one document of one conversation, in append order. */
  loadLog(convId: string, doc: DocName): Promise<LogRow[]>
  /**
   * Atomic and durable before it resolves. Commits land in the order they were called (a
   * later one never becomes durable before an earlier one): conversations issue the stored
   * cursor's write after the rows it covers without waiting for those to land.
   */
  commit(batch: Batch, options?: CommitOptions): Promise<void>
  close(): Promise<void>
}
