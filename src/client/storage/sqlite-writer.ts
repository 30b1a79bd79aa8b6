/**
 * The device store's commits on the process's SQLite writer thread (src/shared/sqlite-thread.ts):
 * on the main thread every commit stopped the event loop for as long as SQLite took to write
 * it (48 ms of a 10,000-message catch-up, ~5 MB of rows). Reads stay on the store's own
 * connection. The writes themselves are `prepareBatchWrites` (sqlite-batch-writes.ts), which an
 * inline store runs too.
 */
import type { Batch } from './device-store.js'
import { prepareBatchWrites, sqliteFailure } from './sqlite-batch-writes.js'
import { openOnWriterThread, ownCopy, type ThreadError } from '../../shared/sqlite-thread.js'

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
      const transfer: ArrayBuffer[] = []
      const own = (bytes: Uint8Array) => ownCopy(bytes, transfer)
      const plain = batches.map((b) => ({
        put: b.put?.map(([k, v]): [string, Uint8Array | null] => [k, v === null ? null : own(v)]),
        append: b.append?.map((op) => ({ convId: op.convId, doc: op.doc, bytes: own(op.bytes) })),
        compact: b.compact?.map((op) => ({ convId: op.convId, doc: op.doc, throughId: op.throughId, merged: own(op.merged) })),
      }))
      return conn.call('write', [plain], transfer).catch((e: ThreadError) => {
        throw sqliteFailure('commit', e)
      })
    },
    close: () =>
      conn.close().catch((e: ThreadError) => {
        throw sqliteFailure('close', e)
      }),
  }
}
