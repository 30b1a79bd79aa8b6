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
import type { Batch, DocName } from './device-store.js'

/** What a failed write reports of a compaction that had nothing to replace. */
export interface NothingToCompact {
  convId: string
  doc: string
  throughId: number
}

/**
 * Batches as handed to the writer thread (sqlite-writer.ts): every byte array of a commit
 * packed into one transferred buffer, each named by its place in it. A commit of ~100 small
 * rows (a batch of sends' outbox entries) as ~100 arrays, each copied and transferred on its
 * own, cost 100–200 µs of structured clone per commit on the sending thread; packed, ~30 µs.
 *
 * ```
 * put      [key, offset, length]            ; length -1: delete the key
 * append   [convId, doc, offset, length]
 * compact  [convId, doc, throughId, offset, length]
 * ```
 */
export interface PackedBatch {
  put?: Array<[key: string, offset: number, length: number]>
  append?: Array<[convId: string, doc: DocName, offset: number, length: number]>
  compact?: Array<[convId: string, doc: DocName, throughId: number, offset: number, length: number]>
}

/**
 * Prepares the write statements on `db`; `write` applies batches in one transaction (all of
 * them, or none); `writePacked` does the same for batches packed as {@link PackedBatch}.
 *
 * @example
 * ```ts
 * const { write } = prepareBatchWrites(db)
 * write([{ put: [['k', new Uint8Array([1])]] }])
 * ```
 */
export function prepareBatchWrites(db: BetterSqlite3.Database): {
  write: (batches: readonly Batch[]) => void
  writePacked: (batches: readonly PackedBatch[], bytes: Uint8Array) => void
} {
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
  const writePacked = (batches: readonly PackedBatch[], bytes: Uint8Array): void => {
    const at = (offset: number, length: number) => bytes.subarray(offset, offset + length)
    write(
      batches.map((b) => ({
        put: b.put?.map(([key, offset, length]): [string, Uint8Array | null] => [key, length < 0 ? null : at(offset, length)]),
        append: b.append?.map(([convId, doc, offset, length]) => ({ convId, doc, bytes: at(offset, length) })),
        compact: b.compact?.map(([convId, doc, throughId, offset, length]) => ({ convId, doc, throughId, merged: at(offset, length) })),
      })),
    )
  }
  return { write, writePacked }
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
