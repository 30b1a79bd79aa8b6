/**
 * SQLite writes on a worker thread. better-sqlite3 is synchronous: on the main thread every
 * commit stops the event loop for as long as SQLite takes to write it (a client's 10,000-message
 * catch-up spent 48 ms there; the relay a fifth of its ingest time). One worker per process owns
 * a write connection per store; the caller keeps its own connection for reads (WAL lets them
 * run beside the writer). The device store (client) and the relay store both use it.
 *
 * Durability is unchanged: a call resolves after the worker's statement or transaction returned
 * (with `synchronous = FULL`, after the commit is on disk), and calls run in the order issued.
 *
 * A store's operations are a function `prepare(db) => ops` sent as source text: a worker needs
 * JavaScript, and this way the same code runs from the TypeScript sources (tests) and from the
 * build, and an inline store runs the very same function on its own connection. Such a function
 * therefore uses nothing from outside its own body.
 *
 * Messages (structured clone; byte arrays are transferred by the caller, never shared):
 * ```
 * main → worker  { kind: 'open', id, path, pragmas, prepare } | { kind: 'call', id, seq, name, args } | { kind: 'close', id }
 * worker → main  { seq, ok: true, value } | { seq, ok: false, error: { message, code?, …the error's own fields } }
 * ```
 */
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import type BetterSqlite3 from 'better-sqlite3'

/** What the worker reports of a failed call: the error's message and its own fields (`code`, …). */
export interface ThreadError {
  message: string
  code?: string
  [field: string]: unknown
}

type Request =
  | { kind: 'open'; id: number; seq: number; path: string; pragmas: string[]; prepare: string }
  | { kind: 'call'; id: number; seq: number; name: string; args: unknown[] }
  | { kind: 'close'; id: number; seq: number }
type Unsequenced<R> = R extends unknown ? Omit<R, 'seq'> : never
type Reply = { seq: number; ok: true; value: unknown } | { seq: number; ok: false; error: ThreadError }

/* c8 ignore start -- runs inside the worker, from its source text */
function threadMain(require: (id: string) => unknown, sqlitePath: string): void {
  type Ops = Record<string, (...args: unknown[]) => unknown>
  const { parentPort } = require('node:worker_threads') as { parentPort: { on(e: 'message', f: (m: Request) => void): void; postMessage(m: unknown): void } }
  const Database = require(sqlitePath) as typeof BetterSqlite3
  const stores = new Map<number, { db: BetterSqlite3.Database; ops: Ops }>()
  /** Stores whose open failed: each of their calls reports that failure. */
  const broken = new Map<number, unknown>()
  const fail = (err: unknown) => {
    const own = err !== null && typeof err === 'object' ? { ...(err as object) } : {}
    return { ...own, message: String((err as { message?: unknown })?.message ?? err) }
  }
  parentPort.on('message', (m) => {
    try {
      let value: unknown
      if (m.kind === 'open') {
        let db: BetterSqlite3.Database | undefined
        try {
          db = new Database(m.path)
          for (const p of m.pragmas) db.pragma(p)
          // esbuild's keepNames (tsx, some test runners) leaves `__name(...)` calls in the source.
          const prepare = new Function('__name', `return (${m.prepare})`)((f: unknown) => f) as (db: BetterSqlite3.Database) => Ops
          stores.set(m.id, { db, ops: prepare(db) })
        } catch (err) {
          db?.close()
          broken.set(m.id, err)
          throw err
        }
      } else if (m.kind === 'call') {
        if (broken.has(m.id)) throw broken.get(m.id)
        const store = stores.get(m.id)
        if (!store) throw new Error('store is not open in the writer thread')
        const op = store.ops[m.name]
        if (!op) throw new Error(`writer thread has no operation ${m.name}`)
        value = op(...m.args)
      } else {
        broken.delete(m.id)
        stores.get(m.id)?.db.close()
        stores.delete(m.id)
      }
      parentPort.postMessage({ seq: m.seq, ok: true, value })
    } catch (err) {
      parentPort.postMessage({ seq: m.seq, ok: false, error: fail(err) })
    }
  })
}
/* c8 ignore stop */

/** The process's writer thread: started on first use, and it never keeps the process alive idle. */
class WriterThread {
  private readonly worker: Worker
  private readonly waiting = new Map<number, { resolve: (value: unknown) => void; reject: (e: ThreadError) => void }>()
  private failure: ThreadError | undefined
  private seq = 0

  constructor() {
    const sqlitePath = createRequire(import.meta.url).resolve('better-sqlite3')
    const source = `var __name = (f) => f;\n(${threadMain.toString()})(require, ${JSON.stringify(sqlitePath)})`
    this.worker = new Worker(source, { eval: true })
    this.worker.unref()
    this.worker.on('message', (reply: Reply) => {
      const w = this.waiting.get(reply.seq)
      this.waiting.delete(reply.seq)
      if (this.waiting.size === 0) this.worker.unref()
      if (reply.ok) w?.resolve(reply.value)
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

  request(message: Unsequenced<Request>, transfer: ArrayBuffer[] = []): Promise<unknown> {
    if (this.failure) return Promise.reject(this.failure)
    const seq = ++this.seq
    return new Promise((resolve, reject) => {
      this.waiting.set(seq, { resolve, reject })
      // Kept alive while anything is in flight: a commit must land before the process exits.
      this.worker.ref()
      try {
        this.worker.postMessage({ ...message, seq }, transfer)
      } catch (err) {
        this.waiting.delete(seq)
        if (this.waiting.size === 0) this.worker.unref()
        reject({ message: `could not hand the request to the writer thread: ${err instanceof Error ? err.message : String(err)}` })
      }
    })
  }
}

let thread: WriterThread | undefined
let opened = 0

type AnyOps = { [name: string]: (...args: never[]) => unknown }

/** One store's write connection on the writer thread. Rejections are {@link ThreadError}s. */
export interface ThreadConnection<Ops extends AnyOps> {
  /** Resolves once the worker opened the connection and prepared the operations. */
  readonly ready: Promise<void>
  /** Runs `ops[name](...args)` on the writer thread; `transfer` hands buffers over without a copy. */
  call<K extends keyof Ops & string>(name: K, args: Parameters<Ops[K]>, transfer?: ArrayBuffer[]): Promise<ReturnType<Ops[K]>>
  close(): Promise<void>
}

/**
 * Opens a write connection to `path` on the process's writer thread (the schema already
 * migrated by the caller's connection), applies `pragmas`, and prepares `prepare(db)` there.
 *
 * @example
 * ```ts
 * const writer = openOnWriterThread('./relay.db', ['journal_mode = WAL', 'synchronous = FULL'], prepareRelayWrites)
 * const seqs = await writer.call('append', [batch])
 * ```
 */
export function openOnWriterThread<Ops extends AnyOps>(
  path: string,
  pragmas: string[],
  prepare: (db: BetterSqlite3.Database) => Ops,
): ThreadConnection<Ops> {
  thread ??= new WriterThread()
  const t = thread
  const id = ++opened
  const ready = t.request({ kind: 'open', id, path, pragmas, prepare: prepare.toString() }).then(() => undefined)
  // A failed open is reported by `ready` and by every call; nobody has to listen to `ready`.
  ready.catch(() => {})
  return {
    ready,
    call: (name, args, transfer) => t.request({ kind: 'call', id, name, args }, transfer) as Promise<ReturnType<Ops[typeof name]>>,
    close: () => t.request({ kind: 'close', id }).then(() => undefined),
  }
}

/**
 * A copy of `bytes` in a buffer of its own, listed in `transfer`: a view into a larger buffer
 * would be cloned whole, and the caller's arrays stay the caller's. (Uint8Array's slice copies;
 * a Node Buffer's would share memory, and transferring it would empty the caller's Buffer.)
 */
export function ownCopy(bytes: Uint8Array, transfer: ArrayBuffer[]): Uint8Array {
  const copy = Uint8Array.prototype.slice.call(bytes)
  transfer.push(copy.buffer as ArrayBuffer)
  return copy
}
