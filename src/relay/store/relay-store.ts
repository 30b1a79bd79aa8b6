/**
 * The relay's durable state: opaque rows, the signed records that decide access, and the
 * binding of outer Yjs client ids to devices. Every implementation (SQLite embedded;
 * PostgreSQL scaled out) passes test/unit/relay-store.conformance.ts.
 *
 * Rows are what the relay stores of an outer update: one row per (client, contiguous clock
 * run), holding the struct bytes only (no group header, no delete set), so rows of one
 * client concatenate into a valid update without decoding anything.
 */
export interface Row {
  room: string
  seq: number
  client: number
  clock: number
  len: number
  /** Number of structs in `structs`. */
  count: number
  structs: Uint8Array
}

export interface RoomSnapshot {
  /** Signed records (genesis, invites, joins) in the order they were accepted. */
  records: Uint8Array[]
  /** Outer client id → owning device (base64url) and next expected clock. */
  clients: Map<number, { device: string; next: number }>
  maxSeq: number
}

export interface AppendBatch {
  rows: Row[]
  /** New client-id bindings made by these rows. */
  bindings: Array<{ room: string; client: number; device: string }>
  records: Array<{ room: string; bytes: Uint8Array }>
}

export interface RelayStore {
  /** Everything needed to serve a room; undefined when the room was never created. */
  loadRoom(room: string): Promise<RoomSnapshot | undefined>
  createRoom(room: string, genesis: Uint8Array, createdAt: number): Promise<void>
  /** Atomic and durable before it resolves. Rows' seqs are assigned by the caller. */
  append(batch: AppendBatch): Promise<void>
  /** Rows of a room with seq > afterSeq, in seq order, at most `limit`. */
  readRows(room: string, afterSeq: number, limit: number): Promise<Row[]>
  /** Smallest seq of a row of `client` in `room` that ends after `clock`; undefined if none. */
  firstRowEndingAfter(room: string, client: number, clock: number): Promise<number | undefined>
  /** Total bytes stored for a room (rows + records). */
  roomBytes(room: string): Promise<number>
  close(): Promise<void>
}
