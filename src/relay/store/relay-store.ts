/**
 * The relay's durable state: opaque rows, the signed records that decide access, and the
 * binding of outer Yjs client ids to devices. Every implementation (SQLite embedded;
 * PostgreSQL scaled out) passes test/unit/relay-store.conformance.ts.
 *
 * Rows are what the relay stores of an outer update: one row per (client, contiguous clock
 * run), holding the struct bytes only (no group header, no delete set), so rows of one
 * client concatenate into a valid update without decoding anything.
 *
 * Compacted rows (`compactRows`): once a snapshot makes old content redundant, a run of rows is
 * replaced by one row holding a single Yjs V1 GC struct, `uint8(0) • varUint(len)` (lib0), with
 * count 1. A GC struct still occupies its clocks, so clients keep their clocks contiguous, and
 * the row keeps the smallest seq of its run, so a reader's seq cursor and the per-client
 * clock order (seq order) stay valid.
 *
 * Membership index (`AppendBatch.devices`, `roomsOfDevice`): which rooms a device (base64url
 * public key) is a member of, so a device (a newly linked one, say) can learn its rooms from the
 * relay. It is derived from the signed records of the same batch and written in the same
 * transaction, so it never disagrees with the records that decide access.
 *
 * Link mailbox (`putLink`, `takeLink`, `purgeLinks`): two slots per mailbox id holding one small
 * opaque blob each, for linking a new device to an existing one that shares no connection with
 * it. They are opaque to the relay (the devices protect them end to end); they live until
 * taken or until they expire, and the first writer of a slot wins, so whoever else learns an
 * id cannot replace a message already waiting.
 */
import { ErrorCode, PetrelError } from '../../shared/errors.js'

export interface Row {
  room: string
  seq: number
  client: number
  clock: number
  len: number
  /** Number of structs in `structs`. */
  count: number
  structs: Uint8Array
  /**
   * The row holds a history snapshot's part (uploaded as `snapshot-part`, no record in it):
   * stored with it, and every device is told so with the row (PROTOCOL §4 rows).
   */
  part?: boolean
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
  /**
   * Membership changes of devices (base64url device public keys) made by this batch's records.
   * Applied in order: `member: true` inserts (idempotent), `false` deletes.
   */
  devices?: Array<{ room: string; device: string; member: boolean }>
  /**
   * Items of these rows the relay refused, each with its reason (a blank stands in the row in
   * their place). Kept so a device that lost the `refused` message with its connection is told
   * again when it asks about those clocks (`refusalsIn`), not acknowledged as if they were stored.
   */
  refusals?: RefusalRow[]
}

/** Clocks [clock, clock + len) of a client refused for `reason` (wire.ts Reason). */
export interface RefusalRow {
  room: string
  client: number
  clock: number
  len: number
  reason: number
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
  /** Refusals stored for `client`'s clocks overlapping [from, to), in clock order. */
  refusalsIn(room: string, client: number, from: number, to: number): Promise<Array<{ clock: number; len: number; reason: number }>>
  /** Rows of the given clients with seq > afterSeq, in seq order, at most `limit` (no content). */
  rowsOfClientsAfter(room: string, clients: number[], afterSeq: number, limit: number): Promise<Array<{ seq: number; client: number; clock: number; len: number }>>
  /**
   * Drop a room's rows with seq < beforeSeq (after a snapshot made them redundant). Each
   * client's next clock is kept (as a floor), so its clocks stay contiguous and are never
   * reused; numbering goes on. Returns how many rows were dropped.
   */
  trimRows(room: string, beforeSeq: number): Promise<number>
  /**
   * Replace the rows of `room` with seq <= throughSeq, except those whose seq is in `keep`, by
   * GC rows: for each client, every maximal run of such rows that is contiguous in clock and not
   * interrupted (in that client's clock order) by a kept row becomes ONE row whose structs are a
   * single Yjs V1 GC struct covering the run (bytes: uint8 0 • varUint len, written with lib0
   * encoding), count 1, clock = run start, len = run length, and seq = the smallest seq of the run.
   * Rows already holding exactly one GC struct are treated like any other row (so compacting twice
   * merges further); a run that is one row already holding exactly its GC struct is left as it
   * is and not counted, so compacting again without anything new is a no-op ({0, 0}). Atomic.
   * Clocks and sequence numbering are unchanged (nextClocks / maxSeq report the same as
   * before). Returns how many rows were removed (every row of a run, the one whose seq the GC
   * row reuses included) and how many GC rows written.
   */
  compactRows(room: string, throughSeq: number, keep: ReadonlySet<number>): Promise<{ removed: number; written: number }>
  /** Rooms in which `device` is currently a member device, sorted (by code point). */
  roomsOfDevice(device: string): Promise<string[]>
  /**
   * Store `bytes` in slot `slot` (0 or 1) of mailbox `id` until `expiresAt` (ms since epoch).
   * False when that slot already holds a message (first writer wins). An expired message holds
   * its slot until it is taken or purged (`takeLink` / `purgeLinks` free it).
   */
  putLink(id: string, slot: number, bytes: Uint8Array, expiresAt: number): Promise<boolean>
  /** Take (return and delete) the message in a slot; undefined when empty or expired (an expired one is deleted too). */
  takeLink(id: string, slot: number, now: number): Promise<Uint8Array | undefined>
  /** The message in a slot, left there; undefined when empty or expired. */
  readLink(id: string, slot: number, now: number): Promise<Uint8Array | undefined>
  /** Delete expired messages (expiresAt <= now); returns how many. */
  purgeLinks(now: number): Promise<number>
  /** Total bytes stored for a room (rows + records). */
  roomBytes(room: string): Promise<number>
  close(): Promise<void>
}

/** The slots of a link mailbox: one per direction between the two devices. */
export const LINK_SLOTS = 2

/** Throws InvalidArgument unless `slot` is a slot of a link mailbox; every store checks alike. */
export function assertLinkSlot(slot: number): void {
  if (!Number.isInteger(slot) || slot < 0 || slot >= LINK_SLOTS) {
    throw new PetrelError(ErrorCode.InvalidArgument, `link mailbox slot ${slot} is not 0 or 1`)
  }
}
