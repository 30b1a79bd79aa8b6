/**
 * Every write of the SQLite relay store, on one connection: the writer thread's
 * (src/shared/sqlite-thread.ts) for a database file, the store's own for `:memory:`. One
 * connection writes, so writes never wait on each other's locks, and the event loop never waits
 * on a commit.
 *
 * `prepareRelayWrites` is sent to the worker as source text, so its body uses nothing from
 * outside itself (types only). It throws plain Errors; the store maps them to PetrelErrors.
 *
 * An append crosses to the worker packed (`packAppend`), so the structured clone copies a few
 * arrays rather than an object per row:
 * ```
 * rooms  string[]       the room of each row
 * nums   Float64Array   7 per row: client, clock, len, count, offset in blob, length in blob, part (0 or 1)
 * blob   Uint8Array     every row's structs, back to back
 * ```
 * (`nums` and `blob` are transferred, not copied.)
 */
import type BetterSqlite3 from 'better-sqlite3'
import type { AppendBatch, NewRow } from './relay-store.js'
import { ownCopy } from '../../shared/sqlite-thread.js'

/** An append batch with its rows in columns (see the file comment). */
export interface PackedAppend {
  rooms: string[]
  nums: Float64Array
  blob: Uint8Array
  bindings: AppendBatch['bindings']
  records: AppendBatch['records']
  receipts?: AppendBatch['receipts']
  devices?: AppendBatch['devices']
  refusals?: AppendBatch['refusals']
}

/** A compaction planned on a read of the rows: each removed row as read, and the GC rows to write. */
export interface CheckedCompaction {
  /** [seq, client, clock, len] of every row to delete: it must still be exactly that row. */
  remove: Array<[number, number, number, number]>
  write: Array<{ seq: number; client: number; clock: number; len: number; count: number; structs: Uint8Array }>
}

/** Numbers per packed row (see PackedAppend; `appendPacked` repeats it as a literal). */
const PACKED_ROW = 7

/** Packs `batch` for the writer thread; `transfer` receives the buffers to hand over. */
export function packAppend(batch: AppendBatch, transfer: ArrayBuffer[]): PackedAppend {
  const n = batch.rows.length
  const nums = new Float64Array(PACKED_ROW * n)
  let total = 0
  for (const r of batch.rows) total += r.structs.length
  const blob = new Uint8Array(total)
  const rooms = new Array<string>(n)
  let at = 0
  for (let i = 0, o = 0; i < n; i++, o += PACKED_ROW) {
    const r = batch.rows[i]!
    rooms[i] = r.room
    nums[o] = r.client
    nums[o + 1] = r.clock
    nums[o + 2] = r.len
    nums[o + 3] = r.count
    nums[o + 4] = at
    nums[o + 5] = r.structs.length
    nums[o + 6] = r.part === true ? 1 : 0
    blob.set(r.structs, at)
    at += r.structs.length
  }
  transfer.push(nums.buffer, blob.buffer)
  const records = batch.records.map((r) => ({ room: r.room, bytes: ownCopy(r.bytes, transfer) }))
  return { rooms, nums, blob, bindings: batch.bindings, records, receipts: batch.receipts, devices: batch.devices, refusals: batch.refusals }
}

/**
 * Prepares the relay's write statements on `db`.
 *
 * @example
 * ```ts
 * const writes = prepareRelayWrites(db)
 * const seqs = writes.append({ rows, bindings: [], records: [] })
 * ```
 */
export function prepareRelayWrites(db: BetterSqlite3.Database): RelayWrites {
  const q = {
    takeSeqs: db.prepare<[number, string], { next_seq: number; id: number }>('UPDATE rooms SET next_seq = next_seq + ? WHERE room = ? RETURNING next_seq, id'),
    roomId: db.prepare<[string], { id: number }>('SELECT id FROM rooms WHERE room = ?'),
    createRoom: db.prepare('INSERT INTO rooms (room, created_at) VALUES (?, ?)'),
    nextRecordIdx: db.prepare<[string], { n: number }>('SELECT COUNT(*) AS n FROM records WHERE room = ?'),
    insertRecord: db.prepare('INSERT INTO records (room, idx, bytes) VALUES (?, ?, ?)'),
    insertClient: db.prepare('INSERT OR IGNORE INTO clients (room, client, device) VALUES (?, ?, ?)'),
    insertRow: db.prepare('INSERT INTO rows (room_id, seq, client, clock, len, count, structs, part) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
    insertRefusal: db.prepare('INSERT OR IGNORE INTO refusals (room, client, clock, len, reason) VALUES (?, ?, ?, ?, ?)'),
    upsertReceipt: db.prepare(
      `INSERT INTO receipts (room, device, stored, read, stored_at, read_at) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (room, device) DO UPDATE SET
         stored_at = CASE WHEN excluded.stored > stored THEN excluded.stored_at ELSE stored_at END,
         read_at = CASE WHEN excluded.read > read THEN excluded.read_at ELSE read_at END,
         stored = MAX(stored, excluded.stored), read = MAX(read, excluded.read)`,
    ),
    addDevice: db.prepare<[string, string]>('INSERT OR IGNORE INTO device_rooms (device, room) VALUES (?, ?)'),
    removeDevice: db.prepare<[string, string]>('DELETE FROM device_rooms WHERE device = ? AND room = ?'),
    raiseFloor: db.prepare<[string, number]>(
      `INSERT INTO client_floor (room, client, next)
         SELECT rooms.room, client, MAX(clock + len) FROM rows JOIN rooms ON rooms.id = rows.room_id WHERE rooms.room = ? AND seq < ? GROUP BY client
       ON CONFLICT (room, client) DO UPDATE SET next = MAX(next, excluded.next)`,
    ),
    trim: db.prepare<[string, number]>('DELETE FROM rows WHERE room_id = (SELECT id FROM rooms WHERE room = ?) AND seq < ?'),
    deleteExactRow: db.prepare<[number, number, number, number, number]>('DELETE FROM rows WHERE room_id = ? AND seq = ? AND client = ? AND clock = ? AND len = ?'),
    putLink: db.prepare<[string, number, Uint8Array, number]>(
      'INSERT INTO link_mailbox (id, slot, bytes, expires_at) VALUES (?, ?, ?, ?) ON CONFLICT (id, slot) DO NOTHING',
    ),
    takeLink: db.prepare<[string, number], { bytes: Uint8Array; expires_at: number }>('DELETE FROM link_mailbox WHERE id = ? AND slot = ? RETURNING bytes, expires_at'),
    purgeLinks: db.prepare<[number]>('DELETE FROM link_mailbox WHERE expires_at <= ?'),
  }

  const append = db.transaction((batch: AppendBatch): number[] => {
    for (const r of batch.records) q.insertRecord.run(r.room, q.nextRecordIdx.get(r.room)!.n, r.bytes)
    for (const b of batch.bindings) q.insertClient.run(b.room, b.client, b.device)
    // Take each room's block of sequence numbers once per batch.
    const perRoom = new Map<string, number>()
    for (const r of batch.rows) perRoom.set(r.room, (perRoom.get(r.room) ?? 0) + 1)
    const nextOf = new Map<string, { id: number; seq: number }>()
    for (const [room, n] of perRoom) {
      const taken = q.takeSeqs.get(n, room)
      if (!taken) throw new Error(`append to unknown room ${room}`)
      nextOf.set(room, { id: taken.id, seq: taken.next_seq - n })
    }
    const seqs = batch.rows.map((r) => {
      const next = nextOf.get(r.room)!
      const seq = ++next.seq
      q.insertRow.run(next.id, seq, r.client, r.clock, r.len, r.count, r.structs, r.part === true ? 1 : 0)
      return seq
    })
    for (const r of batch.refusals ?? []) q.insertRefusal.run(r.room, r.client, r.clock, r.len, r.reason)
    for (const r of batch.receipts ?? []) q.upsertReceipt.run(r.room, r.device, r.stored, r.read, r.storedAt, r.readAt)
    for (const d of batch.devices ?? []) (d.member ? q.addDevice : q.removeDevice).run(d.device, d.room)
    return seqs
  })

  return {
    append: (batch: AppendBatch): number[] => append(batch),
    appendPacked: (p: PackedAppend): number[] => {
      const rows: NewRow[] = new Array(p.rooms.length)
      for (let i = 0; i < rows.length; i++) {
        // A literal: this function runs in the writer thread from its source text, without this module's constants.
        const o = 7 * i
        const at = p.nums[o + 4]!
        rows[i] = {
          room: p.rooms[i]!,
          client: p.nums[o]!,
          clock: p.nums[o + 1]!,
          len: p.nums[o + 2]!,
          count: p.nums[o + 3]!,
          structs: p.blob.subarray(at, at + p.nums[o + 5]!),
          part: p.nums[o + 6] === 1,
        }
      }
      return append({ rows, bindings: p.bindings, records: p.records, receipts: p.receipts, devices: p.devices, refusals: p.refusals })
    },
    createRoom: db.transaction((room: string, genesis: Uint8Array, createdAt: number): void => {
      q.createRoom.run(room, createdAt)
      q.insertRecord.run(room, 0, genesis)
    }),
    trimRows: db.transaction((room: string, beforeSeq: number): number => {
      q.raiseFloor.run(room, beforeSeq)
      return q.trim.run(room, beforeSeq).changes
    }),
    applyCompaction: db.transaction((room: string, plan: CheckedCompaction): { removed: number; written: number } => {
      const id = q.roomId.get(room)?.id
      if (id === undefined) throw new Error(`compaction of unknown room ${room}`)
      for (const [seq, client, clock, len] of plan.remove) {
        if (q.deleteExactRow.run(id, seq, client, clock, len).changes !== 1) throw new Error(`compaction of ${room}: row ${seq} changed since it was planned`)
      }
      for (const w of plan.write) q.insertRow.run(id, w.seq, w.client, w.clock, w.len, w.count, w.structs, 0)
      return { removed: plan.remove.length, written: plan.write.length }
    }),
    putLink: (id: string, slot: number, bytes: Uint8Array, expiresAt: number): boolean => q.putLink.run(id, slot, bytes, expiresAt).changes === 1,
    takeLink: (id: string, slot: number): { bytes: Uint8Array; expiresAt: number } | undefined => {
      const taken = q.takeLink.get(id, slot)
      return taken && { bytes: taken.bytes, expiresAt: taken.expires_at }
    },
    purgeLinks: (now: number): number => q.purgeLinks.run(now).changes,
  }
}

/** The relay store's writes (a type alias, not an interface: the writer thread needs it indexable). */
export type RelayWrites = {
  /** Atomic: records, bindings, rows (numbered here), receipts and the membership index. */
  append(batch: AppendBatch): number[]
  /** `append` of a batch packed by `packAppend`. */
  appendPacked(p: PackedAppend): number[]
  createRoom(room: string, genesis: Uint8Array, createdAt: number): void
  /** Drops rows before `beforeSeq`, keeping each client's next clock as a floor. */
  trimRows(room: string, beforeSeq: number): number
  /**
   * Applies a compaction planned from an earlier read. Every row it removes must still be the
   * row that was read (same seq, client, clock and len); if one is not, nothing is written and
   * it throws, rather than replace rows the plan never saw.
   */
  applyCompaction(room: string, plan: CheckedCompaction): { removed: number; written: number }
  /** False when the slot already holds a message. */
  putLink(id: string, slot: number, bytes: Uint8Array, expiresAt: number): boolean
  takeLink(id: string, slot: number): { bytes: Uint8Array; expiresAt: number } | undefined
  purgeLinks(now: number): number
}
