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
import { packAppend, prepareRelayWrites, type RelayWrites } from './sqlite-relay-writes.js'
import { openOnWriterThread, ownCopy } from '../../shared/sqlite-thread.js'
import { assertLinkSlot, type RelayStore, type RoomSnapshot, type Row } from './relay-store.js'

/** Schema versions, applied in order at start; `user_version` records the last applied. */
export const SQLITE_RELAY_MIGRATIONS: readonly string[] = [
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
  // Rows name their room by a small integer: with the 22-character room id in both of the rows'
  // indexes an append cost ~19 µs a row, with the integer ~12 µs (100 rooms, 500-row commits).
  // `rooms.id` is an INTEGER PRIMARY KEY, so VACUUM never renumbers it.
  `CREATE TABLE rooms_v6 (id INTEGER PRIMARY KEY, room TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL, next_seq INTEGER NOT NULL DEFAULT 0);
   INSERT INTO rooms_v6 (room, created_at, next_seq) SELECT room, created_at, next_seq FROM rooms ORDER BY rowid;
   CREATE TABLE rows_v6 (room_id INTEGER NOT NULL, seq INTEGER NOT NULL, client INTEGER NOT NULL, clock INTEGER NOT NULL,
                         len INTEGER NOT NULL, count INTEGER NOT NULL, structs BLOB NOT NULL, PRIMARY KEY (room_id, seq));
   INSERT INTO rows_v6 (room_id, seq, client, clock, len, count, structs)
     SELECT r.id, rows.seq, rows.client, rows.clock, rows.len, rows.count, rows.structs FROM rows JOIN rooms_v6 r ON r.room = rows.room ORDER BY r.id, rows.seq;
   DROP TABLE rows;
   DROP TABLE rooms;
   ALTER TABLE rooms_v6 RENAME TO rooms;
   ALTER TABLE rows_v6 RENAME TO rows;
   CREATE INDEX rows_by_client ON rows (room_id, client, clock);`,
  // A row uploaded as a history snapshot's part (room message snapshot-part): every device is
  // told so with the row, and refuses a marked envelope that opens as anything but a part.
  `ALTER TABLE rows ADD COLUMN part INTEGER NOT NULL DEFAULT 0;`,
  // Items refused and blanked (AppendBatch.refusals): a device that never heard the refusal is
  // told again, rather than acknowledged as if they were stored (relay-core.ts ownRowAcks).
  `CREATE TABLE refusals (room TEXT NOT NULL, client INTEGER NOT NULL, clock INTEGER NOT NULL, len INTEGER NOT NULL,
                          reason INTEGER NOT NULL, PRIMARY KEY (room, client, clock)) WITHOUT ROWID;`,
]

/** The `rows.room_id` of a room, as a scalar subquery SQLite evaluates once per statement. */
export const ROOM_ID = '(SELECT id FROM rooms WHERE room = ?)'

/** Options of {@link openSqliteRelayStore}. */
export interface SqliteRelayStoreOptions {
  /**
   * Where writes run: `'inline'` (default) on this thread; `'thread'` on the process's SQLite
   * writer thread, so a commit never stops the event loop. On 2 cores busy with the relay and
   * its load the thread made no difference to ingest and added ~0.2–1 ms of median latency, so
   * it is opt-in. `:memory:` is always inline (a second connection would see another database).
   */
  writer?: 'thread' | 'inline'
}

/**
 * The database at `path`, its schema brought up to this version. What cannot be opened (a path
 * that is not a directory, a file that is not a database, a disk that refuses) is a
 * `storage_failed` error naming the path, so an operator reads one line, not a stack trace.
 */
function openMigrated(path: string): Database.Database {
  let db: Database.Database | undefined
  try {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
    const opened = new Database(path)
    db = opened
    opened.pragma('journal_mode = WAL')
    opened.pragma('synchronous = FULL')
    opened.pragma('busy_timeout = 5000')
    const version = opened.pragma('user_version', { simple: true }) as number
    if (version > SQLITE_RELAY_MIGRATIONS.length) {
      throw new PetrelError(ErrorCode.VersionMismatch, `relay database schema ${version} is newer than this relay (${SQLITE_RELAY_MIGRATIONS.length})`)
    }
    opened.transaction(() => {
      for (let v = version; v < SQLITE_RELAY_MIGRATIONS.length; v++) opened.exec(SQLITE_RELAY_MIGRATIONS[v]!)
      opened.pragma(`user_version = ${SQLITE_RELAY_MIGRATIONS.length}`)
    }).immediate()
    return opened
  } catch (cause) {
    db?.close()
    if (cause instanceof PetrelError) throw cause
    throw new PetrelError(ErrorCode.StorageFailed, `relay store: cannot open ${path}: ${(cause as Error)?.message ?? cause}`, { cause })
  }
}

/**
 * Opens (creating and migrating) the relay's SQLite database.
 *
 * @example
 * ```ts
 * const store = openSqliteRelayStore('./data/relay.db')
 * await store.createRoom(room, genesis, Date.now())
 * ```
 */
export function openSqliteRelayStore(path: string, options: SqliteRelayStoreOptions = {}): RelayStore {
  const db = openMigrated(path)
  // Checkpoints on a worker thread, never inside a commit (see sqlite-checkpointer.ts).
  const checkpointer = path === ':memory:' ? undefined : startCheckpointer(path)
  if (checkpointer) db.pragma('wal_autocheckpoint = 0')

  const q = {
    room: db.prepare<[string], { created_at: number }>('SELECT created_at FROM rooms WHERE room = ?'),
    records: db.prepare<[string], { bytes: Buffer }>('SELECT bytes FROM records WHERE room = ? ORDER BY idx'),
    clients: db.prepare<[string], { client: number; device: string }>('SELECT client, device FROM clients WHERE room = ?'),
    nextClocks: db.prepare<[string, string], { client: number; next: number }>(
      `SELECT client, MAX(next) AS next FROM (
         SELECT client, MAX(clock + len) AS next FROM rows WHERE room_id = ${ROOM_ID} GROUP BY client
         UNION ALL SELECT client, next FROM client_floor WHERE room = ?) GROUP BY client`,
    ),
    receipts: db.prepare<[string], { device: string; stored: number; read: number; stored_at: number; read_at: number }>(
      'SELECT device, stored, read, stored_at, read_at FROM receipts WHERE room = ?',
    ),
    maxSeq: db.prepare<[string], { m: number | null }>('SELECT next_seq AS m FROM rooms WHERE room = ?'),
    readRows: db.prepare<[string, number, number], Omit<Row, 'room' | 'structs' | 'part'> & { structs: Buffer; part: number }>(
      `SELECT seq, client, clock, len, count, structs, part FROM rows WHERE room_id = ${ROOM_ID} AND seq > ? ORDER BY seq LIMIT ?`,
    ),
    firstEnding: db.prepare<[string, number, number], { seq: number | null }>(
      `SELECT MIN(seq) AS seq FROM rows WHERE room_id = ${ROOM_ID} AND client = ? AND clock + len > ?`,
    ),
    covering: db.prepare<[string, number, number, number], { seq: number; clock: number; len: number }>(
      `SELECT seq, clock, len FROM rows WHERE room_id = ${ROOM_ID} AND client = ? AND clock < ? AND clock + len > ? ORDER BY clock`,
    ),
    refusals: db.prepare<[string, number, number, number], { clock: number; len: number; reason: number }>(
      'SELECT clock, len, reason FROM refusals WHERE room = ? AND client = ? AND clock < ? AND clock + len > ? ORDER BY clock',
    ),
    compactable: db.prepare<[string, number], Omit<RowMeta, 'small'> & { small: Buffer | null }>(
      `SELECT seq, client, clock, len, count, CASE WHEN count = 1 AND LENGTH(structs) <= ${MAX_GC_BYTES} THEN structs END AS small
       FROM rows WHERE room_id = ${ROOM_ID} AND seq <= ?`,
    ),
    roomsOfDevice: db.prepare<[string], { room: string }>('SELECT room FROM device_rooms WHERE device = ? ORDER BY room'),
    readLink: db.prepare<[string, number, number], { bytes: Buffer }>('SELECT bytes FROM link_mailbox WHERE id = ? AND slot = ? AND expires_at > ?'),
    bytes: db.prepare<[string, string], { b: number | null }>(
      `SELECT (SELECT COALESCE(SUM(LENGTH(structs)), 0) FROM rows WHERE room_id = ${ROOM_ID}) + (SELECT COALESCE(SUM(LENGTH(bytes)), 0) FROM records WHERE room = ?) AS b`,
    ),
  }

  let closed = false
  const failure = (cause: unknown): PetrelError =>
    cause instanceof PetrelError ? cause : new PetrelError(ErrorCode.StorageFailed, `relay store: ${(cause as { message?: string }).message ?? String(cause)}`, { cause })
  const guard = <T>(fn: () => T): Promise<T> => {
    if (closed) return Promise.reject(new PetrelError(ErrorCode.Closed, 'relay store is closed'))
    try {
      return Promise.resolve(fn())
    } catch (cause) {
      return Promise.reject(failure(cause))
    }
  }

  // Every write runs on one connection: the writer thread's, or this one (see sqlite-relay-writes.ts).
  const pragmas = ['journal_mode = WAL', 'synchronous = FULL', 'busy_timeout = 5000', ...(checkpointer ? ['wal_autocheckpoint = 0'] : [])]
  const thread = path !== ':memory:' && options.writer === 'thread' ? openOnWriterThread(path, pragmas, prepareRelayWrites) : undefined
  const inline = thread ? undefined : prepareRelayWrites(db)
  const write = <K extends keyof RelayWrites & string>(name: K, args: Parameters<RelayWrites[K]>, transfer?: ArrayBuffer[]): Promise<ReturnType<RelayWrites[K]>> => {
    if (closed) return Promise.reject(new PetrelError(ErrorCode.Closed, 'relay store is closed'))
    if (thread) return thread.call(name, args, transfer).catch((cause: unknown) => Promise.reject(failure(cause)))
    return guard(() => (inline![name] as unknown as (...a: Parameters<RelayWrites[K]>) => ReturnType<RelayWrites[K]>)(...args))
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
    createRoom: (room, genesis, createdAt) => {
      const transfer: ArrayBuffer[] = []
      return write('createRoom', [room, thread ? ownCopy(genesis, transfer) : genesis, createdAt], transfer)
    },
    append: (batch) => {
      if (!thread) return write('append', [batch])
      const transfer: ArrayBuffer[] = []
      return write('appendPacked', [packAppend(batch, transfer)], transfer)
    },
    readRows: (room, afterSeq, limit) =>
      guard(() =>
        q.readRows.all(room, afterSeq, limit).map(({ part, ...r }) => (part === 1 ? { ...r, room, structs: ownBytes(r.structs), part: true } : { ...r, room, structs: ownBytes(r.structs) })),
      ),
    firstRowEndingAfter: (room, client, clock) => guard(() => q.firstEnding.get(room, client, clock)?.seq ?? undefined),
    rowsCovering: (room, client, from, to) => guard(() => q.covering.all(room, client, to, from)),
    refusalsIn: (room, client, from, to) => guard(() => q.refusals.all(room, client, to, from)),
    rowsOfClientsAfter: (room, clients, afterSeq, limit) =>
      guard(() => {
        if (clients.length === 0) return []
        const marks = clients.map(() => '?').join(',')
        return db
          .prepare<unknown[], { seq: number; client: number; clock: number; len: number }>(
            `SELECT seq, client, clock, len FROM rows WHERE room_id = ${ROOM_ID} AND client IN (${marks}) AND seq > ? ORDER BY seq LIMIT ?`,
          )
          .all(room, ...clients, afterSeq, limit)
      }),
    trimRows: (room, beforeSeq) => write('trimRows', [room, beforeSeq]),
    compactRows: async (room, throughSeq, keep) => {
      // Planned on a read here, applied by the writer, which checks each removed row is still the row read.
      const metas = await guard(() => q.compactable.all(room, throughSeq).map((r) => ({ ...r, small: r.small && new Uint8Array(r.small) })))
      const plan = planCompaction(metas, keep)
      if (plan.remove.length === 0) return { removed: 0, written: 0 }
      const bySeq = new Map(metas.map((m) => [m.seq, m]))
      const remove = plan.remove.map((seq): [number, number, number, number] => {
        const m = bySeq.get(seq)!
        return [seq, m.client, m.clock, m.len]
      })
      return write('applyCompaction', [room, { remove, write: plan.write }])
    },
    roomsOfDevice: (device) => guard(() => q.roomsOfDevice.all(device).map((r) => r.room)),
    putLink: async (id, slot, bytes, expiresAt) => {
      await guard(() => assertLinkSlot(slot))
      const transfer: ArrayBuffer[] = []
      return write('putLink', [id, slot, thread ? ownCopy(bytes, transfer) : bytes, expiresAt], transfer)
    },
    takeLink: async (id, slot, now) => {
      await guard(() => assertLinkSlot(slot))
      const taken = await write('takeLink', [id, slot])
      return taken && taken.expiresAt > now ? new Uint8Array(taken.bytes) : undefined
    },
    readLink: (id, slot, now) =>
      guard(() => {
        assertLinkSlot(slot)
        const row = q.readLink.get(id, slot, now)
        return row ? new Uint8Array(row.bytes) : undefined
      }),
    purgeLinks: (now) => write('purgeLinks', [now]),
    roomBytes: (room) => guard(() => q.bytes.get(room, room)?.b ?? 0),
    close: async () => {
      if (closed) return
      closed = true
      // After every write already issued: the writer runs them in order.
      await thread?.close().catch(() => {})
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
