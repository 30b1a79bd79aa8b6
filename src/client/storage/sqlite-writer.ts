/**
 * SQLite commits on a worker thread. better-sqlite3 is synchronous: on the main thread every
 * commit stopped the event loop for as long as SQLite took to write it (48 ms of a 10,000-message
 * catch-up, ~5 MB of rows). One worker per process owns a write connection per store; the main
 * thread keeps its own connection for reads (WAL lets them run beside the writer).
 *
 * Durability is unchanged: a commit resolves after the worker's transaction returned from a
 * `synchronous = FULL` commit, and commits run in the order they were issued.
 *
 * The worker's code is `writerMain` below and the writes it runs, `prepareBatchWrites`
 * (sqlite-batch-writes.ts, which an inline store runs too), sent as source: a worker needs a
 * JavaScript file, and this way the same code runs from the TypeScript sources (tests) and
 * from the build. Both therefore use nothing from outside their own bodies.
 *
 * Messages (structured clone, never shared memory):
 * ```
 * main → worker  { op: 'open', id, path, maxPages? } | { op: 'commit', id, seq, batches } | { op: 'close', id }
 * worker → main  { id, seq?, ok: true } | { id, seq?, ok: false, error: { message, code?, compact? } }
 * ```
 */
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import type BetterSqlite3 from 'better-sqlite3'
import type { Batch } from './device-store.js'
import { type NothingToCompact, prepareBatchWrites, sqliteFailure } from './sqlite-batch-writes.js'

/** What the worker reports of a failed request. */
interface WriterError {
  message: string
  code?: string
  /** A compaction with no rows to replace (a caller bug, kept distinct from storage failures). */
  compact?: NothingToCompact
}

type Reply = { id: number; seq?: number; ok: true } | { id: number; seq?: number; ok: false; error: WriterError }

/* c8 ignore start -- runs inside the worker, from its source text */
function writerMain(require: (id: string) => unknown, sqlitePath: string, prepare: typeof prepareBatchWrites): void {
  type Db = BetterSqlite3.Database
  type Msg =
    | { op: 'open'; id: number; path: string; maxPages?: number }
    | { op: 'commit'; id: number; seq: number; batches: Batch[] }
    | { op: 'close'; id: number }
  const { parentPort } = require('node:worker_threads') as { parentPort: { on(e: 'message', f: (m: Msg) => void): void; postMessage(m: unknown): void } }
  const Database = require(sqlitePath) as typeof BetterSqlite3
  const stores = new Map<number, { db: Db; write: (batches: readonly Batch[]) => void }>()
  const fail = (err: unknown) => {
    const e = err as { message?: unknown; code?: unknown; compact?: WriterError['compact'] }
    return { message: String(e?.message ?? err), code: typeof e?.code === 'string' ? e.code : undefined, compact: e?.compact }
  }
  const open = (path: string, maxPages?: number) => {
    const db = new Database(path)
    db.pragma('journal_mode = WAL')
    db.pragma('synchronous = FULL')
    db.pragma('busy_timeout = 5000')
    if (maxPages !== undefined) db.pragma(`max_page_count = ${maxPages}`)
    return { db, write: prepare(db) }
  }
  parentPort.on('message', (m) => {
    const seq = m.op === 'commit' ? m.seq : undefined
    try {
      if (m.op === 'open') stores.set(m.id, open(m.path, m.maxPages))
      else if (m.op === 'commit') {
        const store = stores.get(m.id)
        if (!store) throw new Error('store is not open in the writer')
        store.write(m.batches)
      } else {
        stores.get(m.id)?.db.close()
        stores.delete(m.id)
      }
      parentPort.postMessage({ id: m.id, seq, ok: true })
    } catch (err) {
      parentPort.postMessage({ id: m.id, seq, ok: false, error: fail(err) })
    }
  })
}
/* c8 ignore stop */

/** The process's writer thread: started on first use, and it never keeps the process alive idle. */
class WriterThread {
  private readonly worker: Worker
  private readonly waiting = new Map<string, { resolve: () => void; reject: (e: WriterError) => void }>()
  private failure: WriterError | undefined

  constructor() {
    const sqlitePath = createRequire(import.meta.url).resolve('better-sqlite3')
    // esbuild with keepNames (tsx, some test runners) wraps functions in `__name(...)` calls,
    // which would come along in the source text: give them the helper they expect.
    const source = `var __name = (f) => f;\n(${writerMain.toString()})(require, ${JSON.stringify(sqlitePath)}, ${prepareBatchWrites.toString()})`
    this.worker = new Worker(source, { eval: true })
    this.worker.unref()
    this.worker.on('message', (reply: Reply) => {
      const key = `${reply.id}:${reply.seq ?? ''}`
      const w = this.waiting.get(key)
      this.waiting.delete(key)
      if (this.waiting.size === 0) this.worker.unref()
      if (reply.ok) w?.resolve()
      else w?.reject(reply.error)
    })
    const died = (err: unknown) => {
      this.failure = { message: `SQLite writer thread stopped: ${err instanceof Error ? err.message : String(err)}` }
      if (thread === this) thread = undefined
      for (const w of this.waiting.values()) w.reject(this.failure)
      this.waiting.clear()
    }
    this.worker.on('error', died)
    this.worker.on('exit', (code) => died(new Error(`exit code ${code}`)))
  }

  request(message: { op: string; id: number; seq?: number } & Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<void> {
    if (this.failure) return Promise.reject(this.failure)
    return new Promise((resolve, reject) => {
      const key = `${message.id}:${message.seq ?? ''}`
      this.waiting.set(key, { resolve, reject })
      // Kept alive while anything is in flight: a commit must land before the process exits.
      this.worker.ref()
      try {
        this.worker.postMessage(message, transfer)
      } catch (err) {
        this.waiting.delete(key)
        if (this.waiting.size === 0) this.worker.unref()
        reject({ message: `could not hand the request to the writer thread: ${err instanceof Error ? err.message : String(err)}` })
      }
    })
  }
}

let thread: WriterThread | undefined
let stores = 0

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
  thread ??= new WriterThread()
  const t = thread
  const id = ++stores
  let seq = 0
  await t.request({ op: 'open', id, path, maxPages }).catch((e: WriterError) => {
    throw sqliteFailure('open of the writer', e)
  })
  return {
    commit: (batches) => {
      // Copies into buffers of their own, handed over without a second copy: a view into a
      // larger buffer would be cloned whole, and the caller's arrays stay the caller's.
      const transfer: ArrayBuffer[] = []
      const own = (bytes: Uint8Array): Uint8Array => {
        // Uint8Array's slice copies; a Node Buffer's would share memory, and transferring it
        // would empty the caller's Buffer.
        const copy = Uint8Array.prototype.slice.call(bytes)
        transfer.push(copy.buffer as ArrayBuffer)
        return copy
      }
      const plain = batches.map((b) => ({
        put: b.put?.map(([k, v]) => [k, v === null ? null : own(v)]),
        append: b.append?.map((op) => ({ convId: op.convId, doc: op.doc, bytes: own(op.bytes) })),
        compact: b.compact?.map((op) => ({ convId: op.convId, doc: op.doc, throughId: op.throughId, merged: own(op.merged) })),
      }))
      return t.request({ op: 'commit', id, seq: ++seq, batches: plain }, transfer).catch((e: WriterError) => {
        throw sqliteFailure('commit', e)
      })
    },
    close: () =>
      t.request({ op: 'close', id }).catch((e: WriterError) => {
        throw sqliteFailure('close', e)
      }),
  }
}
