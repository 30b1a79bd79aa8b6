/**
 * DeviceStore on IndexedDB (browsers). A commit resolves on the transaction's `complete` event
 * with `durability: 'strict'`: request success only means "queued", and the default durability
 * lets some browsers report completion before the data reaches disk.
 */
import { ErrorCode, PetrelError } from '../../shared/errors.js'
import { pageHidden, whenPageHides } from '../page-visibility.js'
import { COMMIT_LINGER_MS, createCommitGroup, nothingToCompact, validateBatch } from './commit-group.js'
import type { Batch, CompactOp, DeviceStore, DocName, LogRow } from './device-store.js'

const KV = 'kv'
const LOG = 'log'
const BY_CONV_DOC = 'by_conv_doc'

interface LogValue {
  conv: string
  doc: DocName
  bytes: Uint8Array
}

/**
 * Upgrades; entry `i` moves the database from version i to i + 1 inside the `upgradeneeded`
 * transaction. Append, never edit: databases written by older builds must still open.
 */
const UPGRADES: ReadonlyArray<(db: IDBDatabase, tx: IDBTransaction) => void> = [
  (db) => {
    db.createObjectStore(KV)
    // Out-of-line keys from the key generator: ids only grow, and compaction may put a row back
    // under an explicit smaller key without disturbing the generator.
    const log = db.createObjectStore(LOG, { autoIncrement: true })
    log.createIndex(BY_CONV_DOC, ['conv', 'doc'])
  },
]

/** The IndexedDB version this build writes. */
export const INDEXEDDB_SCHEMA_VERSION = UPGRADES.length

const storageFailed = (what: string, err: unknown): PetrelError => {
  if (err instanceof PetrelError) return err
  const e = err as { name?: unknown; message?: unknown } | null
  // Keep the DOMException name (QuotaExceededError, UnknownError, …) in the message: it is what
  // tells an app whether to ask the user to free space.
  const name = typeof e?.name === 'string' ? e.name : 'Error'
  const message = typeof e?.message === 'string' ? e.message : String(err)
  return new PetrelError(ErrorCode.StorageFailed, `IndexedDB ${what} failed: ${name}: ${message}`, { cause: err })
}

const copy = (bytes: Uint8Array): Uint8Array => new Uint8Array(bytes)

// Structured clone stores a view's whole underlying buffer (a Node Buffer's is an 8 KiB pool),
// so anything but an exact, plain Uint8Array is copied to its own bytes first.
const own = (bytes: Uint8Array): Uint8Array =>
  bytes.constructor === Uint8Array &&
  bytes.byteOffset === 0 &&
  bytes.buffer instanceof ArrayBuffer &&
  bytes.byteLength === bytes.buffer.byteLength
    ? bytes
    : new Uint8Array(bytes)

const requestResult = <T>(req: IDBRequest<T>): Promise<T> =>
  new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result)
    req.onerror = () => reject(req.error)
  })

function openDatabase(idb: IDBFactory, name: string): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    let settled = false
    const fail = (err: PetrelError): void => {
      settled = true
      reject(err)
    }
    let req: IDBOpenDBRequest
    try {
      req = idb.open(name, UPGRADES.length)
    } catch (err) {
      fail(storageFailed(`open of "${name}"`, err))
      return
    }
    req.onupgradeneeded = (event) => {
      // A throw here aborts the upgrade transaction, which surfaces as `error` below.
      const tx = req.transaction!
      for (let v = event.oldVersion; v < UPGRADES.length; v++) UPGRADES[v]!(req.result, tx)
    }
    req.onsuccess = () => {
      // Success after we gave up on a blocked open: nobody will use this connection.
      if (settled) req.result.close()
      else {
        settled = true
        resolve(req.result)
      }
    }
    req.onerror = () => {
      if (settled) return
      const err = req.error
      fail(
        err?.name === 'VersionError'
          ? new PetrelError(
              ErrorCode.VersionMismatch,
              `IndexedDB "${name}" was written by a newer Petrel (version > ${UPGRADES.length}); upgrade Petrel`,
              { cause: err },
            )
          : storageFailed(`open of "${name}"`, err),
      )
    }
    // Only connections that ignore `versionchange` (an old build in another tab) can block us;
    // waiting would hang the app with no feedback, so report it.
    req.onblocked = () => {
      if (settled) return
      fail(
        new PetrelError(
          ErrorCode.StorageFailed,
          `IndexedDB "${name}" upgrade is blocked by another tab that has it open; close other tabs of this app and retry`,
        ),
      )
    }
  })
}

/**
 * Opens (creating or upgrading it) an IndexedDB-backed DeviceStore in the database `name`, one
 * database per storage namespace. Commits issued in the same tick share one transaction.
 * Defaults to `globalThis.indexedDB`; pass a factory to use another (e.g. fake-indexeddb).
 *
 * @example
 * ```ts
 * const store = await openIndexedDbStore('petrel:alice')
 * await store.commit({ append: [{ convId, doc: 'outer', bytes: update }] })
 * ```
 */
export async function openIndexedDbStore(name: string, idb?: IDBFactory): Promise<DeviceStore> {
  const factory = idb ?? (globalThis as { indexedDB?: IDBFactory }).indexedDB
  if (factory === undefined) {
    throw new PetrelError(
      ErrorCode.StorageFailed,
      'IndexedDB is not available in this environment; pass an IDBFactory or use SQLite on Node',
    )
  }
  const db = await openDatabase(factory, name)

  let closed = false
  let closing: Promise<void> | undefined
  // Set when the connection goes away underneath us, to explain the `closed` errors that follow.
  let lostReason: string | undefined
  db.onversionchange = () => {
    lostReason = `another tab upgraded or deleted IndexedDB "${name}"`
    closed = true
    // Lets the other tab proceed; transactions already running still complete.
    db.close()
  }
  db.onclose = () => {
    lostReason ??= `the browser closed IndexedDB "${name}"`
    closed = true
  }
  const closedError = (): PetrelError =>
    new PetrelError(ErrorCode.Closed, lostReason ? `device store is closed: ${lostReason}` : 'device store is closed')

  const read = async <T>(what: string, storeName: string, fn: (store: IDBObjectStore) => Promise<T>): Promise<T> => {
    if (closed) throw closedError()
    try {
      return await fn(db.transaction(storeName, 'readonly').objectStore(storeName))
    } catch (err) {
      throw closed ? closedError() : storageFailed(what, err)
    }
  }

  const writeAll = (batches: readonly Batch[]): Promise<void> =>
    new Promise((resolve, reject) => {
      // Not `closed`: a store being closed by its owner still writes what it accepted.
      if (lostReason !== undefined) {
        reject(closedError())
        return
      }
      let tx: IDBTransaction
      try {
        tx = db.transaction([KV, LOG], 'readwrite', { durability: 'strict' } as IDBTransactionOptions)
      } catch (err) {
        reject(lostReason !== undefined ? closedError() : storageFailed('commit', err))
        return
      }
      let failure: unknown
      tx.oncomplete = () => resolve()
      tx.onerror = (event) => {
        failure ??= (event.target as IDBRequest | null)?.error
      }
      // Quota errors usually arrive here only, with no failed request before them.
      tx.onabort = () => reject(storageFailed('commit', failure ?? tx.error))
      const abort = (err: unknown): void => {
        failure ??= err
        try {
          tx.abort()
        } catch {
          // Already finished or aborting; `onabort` reports `failure` either way.
        }
      }

      const kv = tx.objectStore(KV)
      const log = tx.objectStore(LOG)
      const byConvDoc = log.index(BY_CONV_DOC)
      // Steps run strictly in batch order. A compaction must read the keys it replaces before
      // writing, so everything after it is issued from its read callback: requests in one
      // transaction execute in issue order, which keeps later steps seeing its result.
      type Step = { kind: 'writes'; batch: Batch } | { kind: 'compact'; op: CompactOp }
      const steps: Step[] = []
      for (const batch of batches) {
        steps.push({ kind: 'writes', batch })
        for (const op of batch.compact ?? []) steps.push({ kind: 'compact', op })
      }
      let next = 0
      const run = (): void => {
        while (next < steps.length) {
          const step = steps[next++]!
          if (step.kind === 'writes') {
            for (const [key, value] of step.batch.put ?? []) {
              if (value === null) kv.delete(key)
              else kv.put(own(value), key)
            }
            for (const op of step.batch.append ?? []) {
              log.add({ conv: op.convId, doc: op.doc, bytes: own(op.bytes) } satisfies LogValue)
            }
            continue
          }
          const { op } = step
          const keysReq = byConvDoc.getAllKeys([op.convId, op.doc])
          keysReq.onsuccess = () => {
            try {
              // Index order within one [conv, doc] is primary-key order, i.e. append order.
              const keys = (keysReq.result as number[]).filter((k) => k <= op.throughId)
              const last = keys.at(-1)
              if (last === undefined) throw nothingToCompact(op.convId, op.doc, op.throughId)
              for (const key of keys) log.delete(key)
              // Reusing the newest replaced key keeps the merged row ahead of later rows.
              log.put({ conv: op.convId, doc: op.doc, bytes: own(op.merged) } satisfies LogValue, last)
              run()
            } catch (err) {
              abort(err)
            }
          }
          return
        }
      }
      try {
        run()
      } catch (err) {
        abort(err)
      }
    })
  // A hidden tab's timers fire about once a second: there, what was received is stored (and
  // acknowledged, ✓✓) at once instead of lingering for company (page-visibility.ts).
  const group = createCommitGroup(writeAll, COMMIT_LINGER_MS, () => !pageHidden())
  const stopHurrying = whenPageHides(() => group.hurry())

  return {
    kind: 'indexeddb',
    get: (key) =>
      read('get', KV, async (store) => {
        const value = (await requestResult(store.get(key))) as Uint8Array | undefined
        return value === undefined ? undefined : copy(value)
      }),
    list: (prefix) =>
      read(
        'list',
        KV,
        (store) =>
          new Promise((resolve, reject) => {
            const out: Array<[string, Uint8Array]> = []
            const req = store.openCursor()
            req.onerror = () => reject(req.error)
            req.onsuccess = () => {
              const cursor = req.result
              if (cursor === null) {
                resolve(out)
                return
              }
              const key = cursor.key as string
              // Seeking with continue(prefix) rather than an IDBKeyRange: the global IDBKeyRange
              // may belong to another implementation than the factory we were given.
              if (key < prefix) {
                cursor.continue(prefix)
                return
              }
              // Keys sharing a prefix are contiguous from the prefix itself; stop at the first miss.
              if (!key.startsWith(prefix)) {
                resolve(out)
                return
              }
              out.push([key, copy(cursor.value as Uint8Array)])
              cursor.continue()
            }
          }),
      ),
    loadLog: (convId, doc) =>
      read('loadLog', LOG, async (store) => {
        const index = store.index(BY_CONV_DOC)
        // A bare key queries exactly that key, no IDBKeyRange needed.
        const only = [convId, doc]
        // Both requests run in one transaction, so keys and values line up.
        const [keys, values] = await Promise.all([
          requestResult(index.getAllKeys(only)),
          requestResult(index.getAll(only)),
        ])
        return (values as LogValue[]).map((v, i): LogRow => ({ id: keys[i] as number, bytes: copy(v.bytes) }))
      }),
    commit: async (batch, options) => {
      if (closed) throw closedError()
      validateBatch(batch)
      return group.commit(batch, options?.soon)
    },
    close: () =>
      (closing ??= (async () => {
        closed = true
        stopHurrying()
        // Commits accepted before close still land; only later calls see `closed`.
        await group.drain()
        db.close()
      })()),
  }
}
