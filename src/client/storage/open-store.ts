/**
 * Picks the DeviceStore for the client options. Both backends are imported lazily so a browser
 * bundle never pulls in the SQLite path and Node never touches IndexedDB unless asked.
 */
import { ErrorCode, PetrelError } from '../../shared/errors.js'
import type { DeviceStore } from './device-store.js'

export interface OpenDeviceStoreOptions {
  /** A ready store, or a SQLite file path (Node only). Absent: IndexedDB. */
  storage?: string | DeviceStore
  /** Namespace of the IndexedDB database (`petrel:<storageKey>`); `'default'` when absent. */
  storageKey?: string
}

const isNode = (): boolean =>
  typeof (globalThis as { process?: { versions?: { node?: unknown } } }).process?.versions?.node === 'string'

/**
 * Opens the device store the options ask for: the given store object as is, a SQLite file for a
 * path string (Node), or else the IndexedDB database `petrel:${storageKey ?? 'default'}`.
 *
 * @example
 * ```ts
 * const store = await openDeviceStore({ storage: './data/alice.db' }) // Node
 * const inBrowser = await openDeviceStore({ storageKey: 'alice' }) // IndexedDB "petrel:alice"
 * ```
 */
export async function openDeviceStore(opts: OpenDeviceStoreOptions): Promise<DeviceStore> {
  const { storage, storageKey } = opts
  if (typeof storage === 'object' && storage !== null) return storage
  if (typeof storage === 'string') {
    if (storage === '') {
      throw new PetrelError(ErrorCode.InvalidArgument, '`storage` is an empty path; pass a SQLite file path like ./petrel.db')
    }
    if (!isNode()) {
      throw new PetrelError(
        ErrorCode.InvalidArgument,
        '`storage` as a file path means SQLite, which needs Node; in a browser omit `storage` to use IndexedDB',
      )
    }
    const { openSqliteStore } = await import('./sqlite-store.js')
    return openSqliteStore(storage)
  }
  if (storage !== undefined) {
    throw new PetrelError(ErrorCode.InvalidArgument, '`storage` must be a file path or a DeviceStore')
  }
  const idb = (globalThis as { indexedDB?: IDBFactory }).indexedDB
  if (idb === undefined) {
    throw new PetrelError(
      ErrorCode.StorageFailed,
      "no storage: pass `storage: './file.db'` on Node or provide a global indexedDB",
    )
  }
  const { openIndexedDbStore } = await import('./indexeddb-store.js')
  return openIndexedDbStore(`petrel:${storageKey ?? 'default'}`, idb)
}
