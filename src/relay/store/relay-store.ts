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

/** The latest acknowledgement of one device in one room: how far its copy is stored and read. */
export interface ReceiptRow {
  room: string
  device: string
  stored: number
  read: number
  storedAt: number
  readAt: number
}

export interface RoomSnapshot {
  /** Signed records (genesis, invites, joins) in the order they were accepted. */
  records: Uint8Array[]
  /** Outer client id → owning device (base64url) and next expected clock. */
  clients: Map<number, { device: string; next: number }>
  maxSeq: number
  receipts: ReceiptRow[]
}

/** A row before the store has given it its sequence number. */
export type NewRow = Omit<Row, 'seq'>

export interface AppendBatch {
  rows: NewRow[]
  /** New client-id bindings made by these rows. */
  bindings: Array<{ room: string; client: number; device: string }>
  records: Array<{ room: string; bytes: Uint8Array }>
  /** Receipt updates; stores keep the maximum of each field (receipts never go back). */
  receipts?: ReceiptRow[]
}

export interface RelayStore {
  /** Everything needed to serve a room; undefined when the room was never created. */
  loadRoom(room: string): Promise<RoomSnapshot | undefined>
  createRoom(room: string, genesis: Uint8Array, createdAt: number): Promise<void>
  /**
   * Atomic and durable before it resolves. The store assigns each row the next sequence
   * number of its room and returns them in `batch.rows` order. Several relay nodes may append
   * to one room at once: assignment and commit are serialised per room, so a reader that
   * resumes after seq N can never miss a row that commits later with a smaller seq.
   */
  append(batch: AppendBatch): Promise<number[]>
  /** Rows of a room with seq > afterSeq, in seq order, at most `limit`. */
  readRows(room: string, afterSeq: number, limit: number): Promise<Row[]>
  /** Smallest seq of a row of `client` in `room` that ends after `clock`; undefined if none. */
  firstRowEndingAfter(room: string, client: number, clock: number): Promise<number | undefined>
  /** Where rows of `client` overlapping clocks [from, to) are, in clock order (no content). */
  rowsCovering(room: string, client: number, from: number, to: number): Promise<Array<{ seq: number; clock: number; len: number }>>
  /** Rows of the given clients with seq > afterSeq, in seq order, at most `limit` (no content). */
  rowsOfClientsAfter(room: string, clients: number[], afterSeq: number, limit: number): Promise<Array<{ seq: number; client: number; clock: number; len: number }>>
  /**
   * Drop a room's rows with seq < beforeSeq (after a snapshot made them redundant). Each
   * client's next clock is kept (as a floor), so its clocks stay contiguous and are never
   * reused; numbering goes on. Returns how many rows were dropped.
   */
  trimRows(room: string, beforeSeq: number): Promise<number>
  /** Total bytes stored for a room (rows + records). */
  roomBytes(room: string): Promise<number>
  close(): Promise<void>
}
