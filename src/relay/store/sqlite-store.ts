/**
 * RelayStore on SQLite (better-sqlite3): the embedded default. WAL with synchronous=FULL so a
 * row is on disk before the relay acknowledges it (✓ means durable), and one transaction per
 * batch: the relay groups every update that arrived in one event-loop turn into a batch,
 * which measured ~3× a commit per message.
 *
 * Migration 5 adds `device_rooms` (the membership index, keyed device first because it is
 * only ever read by device) and `link_mailbox` (one row per occupied slot; indexed by expiry so
 * a purge does not scan live messages). Compaction needs no schema: a GC row is a row.
 */
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import Database from 'better-sqlite3'
import { startCheckpointer } from './sqlite-checkpointer.js'
import { ErrorCode, PetrelError } from '../../shared/errors.js'
import { MAX_GC_BYTES, planCompaction, type RowMeta } from './compaction.js'
import { type AppendBatch, assertLinkSlot, type RelayStore, type RoomSnapshot, type Row } from './relay-store.js'

/** Schema versions, applied in order at start; `user_version` records the last applied. */
const MIGRATIONS: string[] = [
  `CREATE TABLE rooms (room TEXT PRIMARY KEY, created_at INTEGER NOT NULL);
   CREATE TABLE records (room TEXT NOT NULL, idx INTEGER NOT NULL, bytes BLOB NOT NULL, PRIMARY KEY (room, idx));
   CREATE TABLE clients (room TEXT NOT NULL, client INTEGER NOT NULL, device TEXT NOT NULL, PRIMARY KEY (room, client));
   CREATE TABLE rows (room TEXT NOT NULL, seq INTEGER NOT NULL, client INTEGER NOT NULL, clock INTEGER NOT NULL,
                      len INTEGER NOT NULL, count INTEGER NOT NULL, structs BLOB NOT NULL, PRIMARY KEY (room, seq));
   CREATE INDEX rows_by_client ON rows (room, client, clock);`,
  `CREATE TABLE receipts (room TEXT NOT NULL, device TEXT NOT NULL, stored INTEGER NOT NULL, read INTEGER NOT NULL,
                         stored_at INTEGER NOT NULL, read_at INTEGER NOT NULL, PRIMARY KEY (room, device));`,
  `ALTER TABLE rooms ADD COLUMN next_seq INTEGER NOT NULL DEFAULT 0;
   UPDATE rooms SET next_seq = (SELECT COALESCE(MAX(seq), 0) FROM rows WHERE rows.room = rooms.room);`,
  `CREATE TABLE client_floor (room TEXT NOT NULL, client INTEGER NOT NULL, next INTEGER NOT NULL, PRIMARY KEY (room, client));`,
  `CREATE TABLE device_rooms (device TEXT NOT NULL, room TEXT NOT NULL, PRIMARY KEY (device, room)) WITHOUT ROWID;
   CREATE TABLE link_mailbox (id TEXT NOT NULL, slot INTEGER NOT NULL, bytes BLOB NOT NULL, expires_at INTEGER NOT NULL,
                              PRIMARY KEY (id, slot));
   CREATE INDEX link_mailbox_by_expiry ON link_mailbox (expires_at);`,
]

export function openSqliteRelayStore(path: string): RelayStore {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
  const db = new Database(path)
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = FULL')
  db.pragma('busy_timeout = 5000')
  const version = db.pragma('user_version', { simple: true }) as number
  if (version > MIGRATIONS.length) {
    db.close()
    throw new PetrelError(ErrorCode.VersionMismatch, `relay database schema ${version} is newer than this relay (${MIGRATIONS.length})`)
  }
  db.transaction(() => {
    for (let v = version; v < MIGRATIONS.length; v++) db.exec(MIGRATIONS[v]!)
    db.pragma(`user_version = ${MIGRATIONS.length}`)
  }).immediate()
  // Checkpoints on a worker thread, never inside a commit (see sqlite-checkpointer.ts).
  const checkpointer = path === ':memory:' ? undefined : startCheckpointer(path)
  if (checkpointer) db.pragma('wal_autocheckpoint = 0')

  const q = {
    room: db.prepare<[string], { created_at: number }>('SELECT created_at FROM rooms WHERE room = ?'),
    records: db.prepare<[string], { bytes: Buffer }>('SELECT bytes FROM records WHERE room = ? ORDER BY idx'),
    clients: db.prepare<[string], { client: number; device: string }>('SELECT client, device FROM clients WHERE room = ?'),
    nextClocks: db.prepare<[string, string], { client: number; next: number }>(
      `SELECT client, MAX(next) AS next FROM (
         SELECT client, MAX(clock + len) AS next FROM rows WHERE room = ? GROUP BY client
         UNION ALL SELECT client, next FROM client_floor WHERE room = ?) GROUP BY client`,
    ),
    raiseFloor: db.prepare<[string, number]>(
      `INSERT INTO client_floor (room, client, next)
         SELECT room, client, MAX(clock + len) FROM rows WHERE room = ? AND seq < ? GROUP BY client
       ON CONFLICT (room, client) DO UPDATE SET next = MAX(next, excluded.next)`,
    ),
    trim: db.prepare<[string, number]>('DELETE FROM rows WHERE room = ? AND seq < ?'),
    receipts: db.prepare<[string], { device: string; stored: number; read: number; stored_at: number; read_at: number }>(
      'SELECT device, stored, read, stored_at, read_at FROM receipts WHERE room = ?',
    ),
    upsertReceipt: db.prepare(
      `INSERT INTO receipts (room, device, stored, read, stored_at, read_at) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (room, device) DO UPDATE SET
         stored_at = CASE WHEN excluded.stored > stored THEN excluded.stored_at ELSE stored_at END,
         read_at = CASE WHEN excluded.read > read THEN excluded.read_at ELSE read_at END,
         stored = MAX(stored, excluded.stored), read = MAX(read, excluded.read)`,
    ),
    maxSeq: db.prepare<[string], { m: number | null }>('SELECT next_seq AS m FROM rooms WHERE room = ?'),
    takeSeqs: db.prepare<[number, string], { next_seq: number }>('UPDATE rooms SET next_seq = next_seq + ? WHERE room = ? RETURNING next_seq'),
    createRoom: db.prepare('INSERT INTO rooms (room, created_at) VALUES (?, ?)'),
    nextRecordIdx: db.prepare<[string], { n: number }>('SELECT COUNT(*) AS n FROM records WHERE room = ?'),
    insertRecord: db.prepare('INSERT INTO records (room, idx, bytes) VALUES (?, ?, ?)'),
    insertClient: db.prepare('INSERT OR IGNORE INTO clients (room, client, device) VALUES (?, ?, ?)'),
    insertRow: db.prepare('INSERT INTO rows (room, seq, client, clock, len, count, structs) VALUES (?, ?, ?, ?, ?, ?, ?)'),
    readRows: db.prepare<[string, number, number], Omit<Row, 'room' | 'structs'> & { structs: Buffer }>(
      'SELECT seq, client, clock, len, count, structs FROM rows WHERE room = ? AND seq > ? ORDER BY seq LIMIT ?',
    ),
    firstEnding: db.prepare<[string, number, number], { seq: number | null }>(
      'SELECT MIN(seq) AS seq FROM rows WHERE room = ? AND client = ? AND clock + len > ?',
    ),
    covering: db.prepare<[string, number, number, number], { seq: number; clock: number; len: number }>(
      'SELECT seq, clock, len FROM rows WHERE room = ? AND client = ? AND clock < ? AND clock + len > ? ORDER BY clock',
    ),
    compactable: db.prepare<[string, number], Omit<RowMeta, 'small'> & { small: Buffer | null }>(
      `SELECT seq, client, clock, len, count, CASE WHEN count = 1 AND LENGTH(structs) <= ${MAX_GC_BYTES} THEN structs END AS small
       FROM rows WHERE room = ? AND seq <= ?`,
    ),
    deleteRow: db.prepare<[string, number]>('DELETE FROM rows WHERE room = ? AND seq = ?'),
    addDevice: db.prepare<[string, string]>('INSERT OR IGNORE INTO device_rooms (device, room) VALUES (?, ?)'),
    removeDevice: db.prepare<[string, string]>('DELETE FROM device_rooms WHERE device = ? AND room = ?'),
    roomsOfDevice: db.prepare<[string], { room: string }>('SELECT room FROM device_rooms WHERE device = ? ORDER BY room'),
    putLink: db.prepare<[string, number, Uint8Array, number]>(
      'INSERT INTO link_mailbox (id, slot, bytes, expires_at) VALUES (?, ?, ?, ?) ON CONFLICT (id, slot) DO NOTHING',
    ),
    takeLink: db.prepare<[string, number], { bytes: Buffer; expires_at: number }>(
      'DELETE FROM link_mailbox WHERE id = ? AND slot = ? RETURNING bytes, expires_at',
    ),
    purgeLinks: db.prepare<[number]>('DELETE FROM link_mailbox WHERE expires_at <= ?'),
    bytes: db.prepare<[string, string], { b: number | null }>(
      'SELECT (SELECT COALESCE(SUM(LENGTH(structs)), 0) FROM rows WHERE room = ?) + (SELECT COALESCE(SUM(LENGTH(bytes)), 0) FROM records WHERE room = ?) AS b',
    ),
  }

  const appendTx = db.transaction((batch: AppendBatch): number[] => {
    for (const r of batch.records) q.insertRecord.run(r.room, q.nextRecordIdx.get(r.room)!.n, r.bytes)
    for (const b of batch.bindings) q.insertClient.run(b.room, b.client, b.device)
    // Take each room's block of sequence numbers once per batch.
    const perRoom = new Map<string, number>()
    for (const r of batch.rows) perRoom.set(r.room, (perRoom.get(r.room) ?? 0) + 1)
    const nextOf = new Map<string, number>()
    for (const [room, n] of perRoom) {
      const taken = q.takeSeqs.get(n, room)
      if (!taken) throw new Error(`append to unknown room ${room}`)
      nextOf.set(room, taken.next_seq - n)
    }
    const seqs = batch.rows.map((r) => {
      const seq = nextOf.get(r.room)! + 1
      nextOf.set(r.room, seq)
      q.insertRow.run(r.room, seq, r.client, r.clock, r.len, r.count, r.structs)
      return seq
    })
    for (const r of batch.receipts ?? []) q.upsertReceipt.run(r.room, r.device, r.stored, r.read, r.storedAt, r.readAt)
    for (const d of batch.devices ?? []) (d.member ? q.addDevice : q.removeDevice).run(d.device, d.room)
    return seqs
  })

  const compactTx = db.transaction((room: string, throughSeq: number, keep: ReadonlySet<number>) => {
    const metas = q.compactable.all(room, throughSeq).map((r) => ({ ...r, small: r.small && new Uint8Array(r.small) }))
    const plan = planCompaction(metas, keep)
    for (const seq of plan.remove) q.deleteRow.run(room, seq)
    for (const w of plan.write) q.insertRow.run(room, w.seq, w.client, w.clock, w.len, w.count, w.structs)
    return { removed: plan.remove.length, written: plan.write.length }
  })

  let closed = false
  const guard = <T>(fn: () => T): Promise<T> => {
    if (closed) return Promise.reject(new PetrelError(ErrorCode.Closed, 'relay store is closed'))
    try {
      return Promise.resolve(fn())
    } catch (cause) {
      if (cause instanceof PetrelError) return Promise.reject(cause)
      return Promise.reject(new PetrelError(ErrorCode.StorageFailed, `relay store: ${(cause as Error).message}`, { cause }))
    }
  }

  return {
    loadRoom: (room) =>
      guard((): RoomSnapshot | undefined => {
        if (!q.room.get(room)) return undefined
        const clients = new Map<number, { device: string; next: number }>()
        for (const c of q.clients.all(room)) clients.set(c.client, { device: c.device, next: 0 })
        for (const c of q.nextClocks.all(room, room)) {
          const entry = clients.get(c.client)
          if (entry) entry.next = c.next
        }
        return {
          records: q.records.all(room).map((r) => new Uint8Array(r.bytes)),
          clients,
          maxSeq: q.maxSeq.get(room)?.m ?? 0,
          receipts: q.receipts.all(room).map((r) => ({
            room,
            device: r.device,
            stored: r.stored,
            read: r.read,
            storedAt: r.stored_at,
            readAt: r.read_at,
          })),
        }
      }),
    createRoom: (room, genesis, createdAt) =>
      guard(() => {
        db.transaction(() => {
          q.createRoom.run(room, createdAt)
          q.insertRecord.run(room, 0, genesis)
        })()
      }),
    append: (batch) => guard(() => appendTx(batch)),
    readRows: (room, afterSeq, limit) =>
      guard(() => q.readRows.all(room, afterSeq, limit).map((r) => ({ ...r, room, structs: ownBytes(r.structs) }))),
    firstRowEndingAfter: (room, client, clock) => guard(() => q.firstEnding.get(room, client, clock)?.seq ?? undefined),
    rowsCovering: (room, client, from, to) => guard(() => q.covering.all(room, client, to, from)),
    rowsOfClientsAfter: (room, clients, afterSeq, limit) =>
      guard(() => {
        if (clients.length === 0) return []
        const marks = clients.map(() => '?').join(',')
        return db
          .prepare<unknown[], { seq: number; client: number; clock: number; len: number }>(
            `SELECT seq, client, clock, len FROM rows WHERE room = ? AND client IN (${marks}) AND seq > ? ORDER BY seq LIMIT ?`,
          )
          .all(room, ...clients, afterSeq, limit)
      }),
    trimRows: (room, beforeSeq) =>
      guard(() =>
        db.transaction(() => {
          q.raiseFloor.run(room, beforeSeq)
          return q.trim.run(room, beforeSeq).changes
        })(),
      ),
    compactRows: (room, throughSeq, keep) => guard(() => compactTx(room, throughSeq, keep)),
    roomsOfDevice: (device) => guard(() => q.roomsOfDevice.all(device).map((r) => r.room)),
    putLink: (id, slot, bytes, expiresAt) =>
      guard(() => {
        assertLinkSlot(slot)
        return q.putLink.run(id, slot, bytes, expiresAt).changes === 1
      }),
    takeLink: (id, slot, now) =>
      guard(() => {
        assertLinkSlot(slot)
        const taken = q.takeLink.get(id, slot)
        return taken && taken.expires_at > now ? new Uint8Array(taken.bytes) : undefined
      }),
    purgeLinks: (now) => guard(() => q.purgeLinks.run(now).changes),
    roomBytes: (room) => guard(() => q.bytes.get(room, room)?.b ?? 0),
    close: async () => {
      if (closed) return
      closed = true
      await checkpointer?.stop()
      // One last checkpoint, so a clean shutdown leaves a short WAL behind.
      try {
        db.pragma('wal_checkpoint(TRUNCATE)')
      } catch {
        // Another process may hold the database; the WAL stays valid either way.
      }
      db.close()
    },
  }
}

/**
 * better-sqlite3 returns each blob in a Buffer of its own (not a slice of a pool): a plain view
 * of it needs no copy. A copy is made only if that ever changes, so a row never pins a pool.
 */
function ownBytes(b: Buffer): Uint8Array {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? new Uint8Array(b.buffer, 0, b.byteLength) : new Uint8Array(b)
}
