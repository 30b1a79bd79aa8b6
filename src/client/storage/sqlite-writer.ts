/**
 * The device store's commits on the process's SQLite writer thread (src/shared/sqlite-thread.ts):
 * on the main thread every commit stopped the event loop for as long as SQLite took to write
 * it (48 ms of a 10,000-message catch-up, ~5 MB of rows). Reads stay on the store's own
 * connection. The writes themselves are `prepareBatchWrites` (sqlite-batch-writes.ts), which an
 * inline store runs too.
 */
import type { Batch, DocName } from './device-store.js'
import { type PackedBatch, prepareBatchWrites, sqliteFailure } from './sqlite-batch-writes.js'
import { openOnWriterThread, type ThreadError } from '../../shared/sqlite-thread.js'

/** One store's writes, on the process's writer thread. */
export interface SqliteWriter {
  /** Applies the batches in one transaction; rejects with what the worker reported. */
  commit(batches: readonly Batch[]): Promise<void>
  close(): Promise<void>
}

/**
 * Opens a write connection to `path` on the writer thread (schema already migrated by the
 * caller's connection).
 *
 * @example
 * ```ts
 * const writer = await openSqliteWriter('./alice.db')
 * await writer.commit([{ put: [['k', new Uint8Array([1])]] }])
 * ```
 */
export async function openSqliteWriter(path: string, maxPages?: number): Promise<SqliteWriter> {
  const pragmas = ['journal_mode = WAL', 'synchronous = FULL', 'busy_timeout = 5000']
  if (maxPages !== undefined) pragmas.push(`max_page_count = ${maxPages}`)
  const conn = openOnWriterThread(path, pragmas, prepareBatchWrites)
  await conn.ready.catch((e: ThreadError) => {
    throw sqliteFailure('open of the writer', e)
  })
  return {
    commit: (batches) => {
      let total = 0
      for (const b of batches) {
        for (const [, v] of b.put ?? []) total += v?.length ?? 0
        for (const op of b.append ?? []) total += op.bytes.length
        for (const op of b.compact ?? []) total += op.merged.length
      }
      // One buffer for the whole commit, transferred: see PackedBatch.
      const bytes = new Uint8Array(total)
      let end = 0
      const place = (v: Uint8Array): number => {
        bytes.set(v, end)
        end += v.length
        return end - v.length
      }
      const packed = batches.map(
        (b): PackedBatch => ({
          put: b.put?.map(([k, v]): [string, number, number] => (v === null ? [k, 0, -1] : [k, place(v), v.length])),
          append: b.append?.map((op): [string, DocName, number, number] => [op.convId, op.doc, place(op.bytes), op.bytes.length]),
          compact: b.compact?.map((op): [string, DocName, number, number, number] => [op.convId, op.doc, op.throughId, place(op.merged), op.merged.length]),
        }),
      )
      return conn.call('writePacked', [packed, bytes], [bytes.buffer as ArrayBuffer]).catch((e: ThreadError) => {
        throw sqliteFailure('commit', e)
      })
    },
    close: () =>
      conn.close().catch((e: ThreadError) => {
        throw sqliteFailure('close', e)
      }),
  }
}
