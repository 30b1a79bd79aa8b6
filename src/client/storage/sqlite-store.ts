/**
 * DeviceStore on SQLite (Node). Reads run on this thread's connection; commits run on the
 * writer thread (sqlite-writer.ts), so writing a large batch no longer stops the event loop.
 * Commits issued while one is being written are grouped into the next transaction: one fsync
 * per group instead of one per message. An in-memory database (one connection only) and
 * `writer: 'inline'` commit on this thread instead.
 */
import type BetterSqlite3 from 'better-sqlite3'
import { ErrorCode, PetrelError } from '../../shared/errors.js'
import { createCommitGroup, validateBatch } from './commit-group.js'
import type { DeviceStore, DocName, LogRow } from './device-store.js'
import { prepareBatchWrites, sqliteFailure } from './sqlite-batch-writes.js'
import { openSqliteWriter, type SqliteWriter } from './sqlite-writer.js'

type Db = BetterSqlite3.Database

/**
 * Schema migrations; entry `i` upgrades `user_version` i to i + 1. Append, never edit: a file
 * written by an older build must still open, and one written by a newer build is refused.
 */
const MIGRATIONS: ReadonlyArray<(db: Db) => void> = [
  (db) => {
    db.exec(`
      CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
      -- AUTOINCREMENT so ids are never reused, even after the newest row is compacted away.
      CREATE TABLE log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conv TEXT NOT NULL,
        doc TEXT NOT NULL,
        bytes BLOB NOT NULL
      );
      CREATE INDEX log_by_conv_doc ON log (conv, doc, id);
    `)
  },
]

/** The `user_version` this build writes. */
export const SQLITE_SCHEMA_VERSION = MIGRATIONS.length

// Long enough to ride out a checkpoint or a backup tool's read lock, short enough to surface a
// second process holding the file (the contract says one engine owns one store).
const BUSY_TIMEOUT_MS = 5_000

export interface SqliteStoreOptions {
  /**
   * Cap on the database size; writes beyond it fail with `storage_failed` like a full disk or a
   * browser quota. Unlimited when absent.
   */
  maxSizeBytes?: number
  /**
   * Where commits run: `'thread'` (default for a file) on the process's SQLite writer thread,
   * `'inline'` on this thread (the only choice for `:memory:`).
   */
  writer?: 'thread' | 'inline'
}


const closedError = (): PetrelError => new PetrelError(ErrorCode.Closed, 'device store is closed')

// better-sqlite3 hands out Buffers; callers get plain Uint8Arrays they own.
const copy = (bytes: Uint8Array): Uint8Array => new Uint8Array(bytes)

function migrate(db: Db): void {
  // IMMEDIATE takes the write lock before reading the version, so two processes opening a fresh
  // file cannot both run the same migration.
  db.transaction(() => {
    const version = db.pragma('user_version', { simple: true }) as number
    if (version > MIGRATIONS.length) {
      throw new PetrelError(
        ErrorCode.VersionMismatch,
        `SQLite store schema version ${version} is newer than this build supports (${MIGRATIONS.length}); upgrade Petrel`,
      )
    }
    for (let v = version; v < MIGRATIONS.length; v++) MIGRATIONS[v]!(db)
    if (version !== MIGRATIONS.length) db.pragma(`user_version = ${MIGRATIONS.length}`)
  }).immediate()
}

/**
 * Opens (creating it and its parent directory if missing) a SQLite-backed DeviceStore at `path`.
 * Node only. Commits are durable against process kill and power loss once they resolve (WAL,
 * `synchronous = FULL`); commits issued in the same tick share one transaction.
 *
 * @example
 * ```ts
 * const store = await openSqliteStore('./data/alice.db')
 * await store.commit({ put: [['settings', new TextEncoder().encode('{}')]] })
 * await store.close()
 * ```
 */
export async function openSqliteStore(path: string, options: SqliteStoreOptions = {}): Promise<DeviceStore> {
  let db: Db
  const inMemory = path === '' || path === ':memory:'
  try {
    if (!inMemory) {
      const [{ mkdirSync }, { dirname }] = await Promise.all([import('node:fs'), import('node:path')])
      mkdirSync(dirname(path), { recursive: true })
    }
    const { default: Database } = await import('better-sqlite3')
    db = new Database(path)
  } catch (err) {
    throw sqliteFailure(`open of ${JSON.stringify(path)}`, err)
  }

  let maxPages: number | undefined
  try {
    db.pragma('journal_mode = WAL')
    db.pragma('synchronous = FULL')
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`)
    if (options.maxSizeBytes !== undefined) {
      const pageSize = db.pragma('page_size', { simple: true }) as number
      maxPages = Math.max(1, Math.floor(options.maxSizeBytes / pageSize))
      db.pragma(`max_page_count = ${maxPages}`)
    }
    migrate(db)
  } catch (err) {
    db.close()
    throw sqliteFailure(`setup of ${JSON.stringify(path)}`, err)
  }

  let writer: SqliteWriter | undefined
  if (!inMemory && options.writer !== 'inline') {
    try {
      writer = await openSqliteWriter(path, maxPages)
    } catch (err) {
      db.close()
      throw sqliteFailure(`setup of ${JSON.stringify(path)}`, err)
    }
  }

  const stmt = {
    get: db.prepare<[string], { value: Uint8Array }>('SELECT value FROM kv WHERE key = ?'),
    listFrom: db.prepare<[string], { key: string; value: Uint8Array }>(
      'SELECT key, value FROM kv WHERE key >= ? ORDER BY key',
    ),
    loadLog: db.prepare<[string, string], LogRow>('SELECT id, bytes FROM log WHERE conv = ? AND doc = ? ORDER BY id'),
  }

  // Inline: the same writes as the writer thread's, on this connection.
  const writeAll = writer ? undefined : prepareBatchWrites(db).write
  const group = createCommitGroup((batches) => {
    if (writer) return writer.commit(batches)
    try {
      writeAll!(batches)
    } catch (err) {
      throw sqliteFailure('commit', err)
    }
  })

  let closed = false
  let closing: Promise<void> | undefined
  // Reads are synchronous underneath; wrapping them keeps errors as rejections, never throws.
  const read = async <T>(what: string, fn: () => T): Promise<T> => {
    if (closed) throw closedError()
    try {
      return fn()
    } catch (err) {
      throw sqliteFailure(what, err)
    }
  }

  return {
    kind: 'sqlite',
    get: (key) =>
      read('get', () => {
        const row = stmt.get.get(key)
        return row === undefined ? undefined : copy(row.value)
      }),
    list: (prefix) =>
      read('list', () => {
        const out: Array<[string, Uint8Array]> = []
        // Keys sharing a prefix are contiguous from the prefix itself, so stop at the first miss.
        for (const row of stmt.listFrom.iterate(prefix)) {
          if (!row.key.startsWith(prefix)) break
          out.push([row.key, copy(row.value)])
        }
        // SQLite orders by UTF-8 bytes, IndexedDB by UTF-16 code units; they differ above U+FFFF.
        // Sorting here gives both stores the same order.
        return out.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      }),
    loadLog: (convId: string, doc: DocName) =>
      read('loadLog', () => stmt.loadLog.all(convId, doc).map((row) => ({ id: row.id, bytes: copy(row.bytes) }))),
    commit: async (batch, options) => {
      if (closed) throw closedError()
      validateBatch(batch)
      return group.commit(batch, options?.soon)
    },
    close: () =>
      (closing ??= (async () => {
        closed = true
        // Commits accepted before close still land; only later calls see `closed`.
        await group.drain()
        try {
          await writer?.close()
        } catch (err) {
          throw sqliteFailure('close', err)
        } finally {
          db.close()
        }
      })()),
  }
}
