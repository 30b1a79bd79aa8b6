/**
 * How a group of batches is written to the SQLite device store, in one transaction: the one
 * write path of both the writer thread (sqlite-writer.ts) and an inline store
 * (sqlite-store.ts).
 *
 * `prepareBatchWrites` is sent to the worker as source text, so its body uses nothing from
 * outside itself (types only). It throws a plain Error; a compaction with no rows to replace
 * carries `compact` (a caller bug, which the callers turn into `invalid_argument`).
 */
import type BetterSqlite3 from 'better-sqlite3'
import { ErrorCode, PetrelError } from '../../shared/errors.js'
import { nothingToCompact } from './commit-group.js'
import type { Batch } from './device-store.js'

/** What a failed write reports of a compaction that had nothing to replace. */
export interface NothingToCompact {
  convId: string
  doc: string
  throughId: number
}

/**
 * Prepares the write statements on `db`; `write` applies batches in one transaction (all of
 * them, or none).
 *
 * @example
 * ```ts
 * const { write } = prepareBatchWrites(db)
 * write([{ put: [['k', new Uint8Array([1])]] }])
 * ```
 */
export function prepareBatchWrites(db: BetterSqlite3.Database): { write: (batches: readonly Batch[]) => void } {
  const stmt = {
    put: db.prepare<[string, Uint8Array]>('INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)'),
    del: db.prepare<[string]>('DELETE FROM kv WHERE key = ?'),
    append: db.prepare<[string, string, Uint8Array]>('INSERT INTO log (conv, doc, bytes) VALUES (?, ?, ?)'),
    maxThrough: db.prepare<[string, string, number], { id: number | null }>('SELECT max(id) AS id FROM log WHERE conv = ? AND doc = ? AND id <= ?'),
    deleteThrough: db.prepare<[string, string, number]>('DELETE FROM log WHERE conv = ? AND doc = ? AND id <= ?'),
    insertAt: db.prepare<[number, string, string, Uint8Array]>('INSERT INTO log (id, conv, doc, bytes) VALUES (?, ?, ?, ?)'),
  }
  const write = db.transaction((batches: readonly Batch[]) => {
    for (const batch of batches) {
      for (const [key, value] of batch.put ?? []) {
        if (value === null) stmt.del.run(key)
        else stmt.put.run(key, value)
      }
      for (const op of batch.append ?? []) stmt.append.run(op.convId, op.doc, op.bytes)
      for (const op of batch.compact ?? []) {
        // The merged row takes the newest replaced id: that id is free once its row is deleted and
        // sorts before every later row of the document, so log order survives compaction.
        const id = stmt.maxThrough.get(op.convId, op.doc, op.throughId)?.id
        if (id == null) {
          const compact: NothingToCompact = { convId: op.convId, doc: op.doc, throughId: op.throughId }
          throw Object.assign(new Error('nothing to compact'), { compact })
        }
        stmt.deleteThrough.run(op.convId, op.doc, op.throughId)
        stmt.insertAt.run(id, op.convId, op.doc, op.merged)
      }
    }
  })
  return { write }
}

/**
 * The PetrelError for a failed SQLite call (`what`: "commit", "open of …"), whether it failed
 * on this thread or the writer's (which reports plain `{ message, code?, compact? }`): a
 * compaction with nothing to replace is `invalid_argument`, anything else `storage_failed`
 * with SQLite's code (`SQLITE_FULL`, …).
 */
export function sqliteFailure(what: string, err: unknown): PetrelError {
  if (err instanceof PetrelError) return err
  const e = err as { code?: unknown; message?: unknown; compact?: NothingToCompact } | null
  if (e?.compact) return nothingToCompact(e.compact.convId, e.compact.doc, e.compact.throughId)
  const code = typeof e?.code === 'string' ? ` (${e.code})` : ''
  const detail = typeof e?.message === 'string' ? e.message : String(err)
  return new PetrelError(ErrorCode.StorageFailed, `SQLite ${what} failed${code}: ${detail}`, { cause: err })
}
