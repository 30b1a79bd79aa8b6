import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { IDBDatabase, IDBFactory, IDBObjectStore } from 'fake-indexeddb'
import { afterEach, describe, expect, it, vi } from 'vitest'
import type { DeviceStore } from '../../src/client/storage/device-store.js'
import { INDEXEDDB_SCHEMA_VERSION, openIndexedDbStore } from '../../src/client/storage/indexeddb-store.js'
import { openDeviceStore } from '../../src/client/storage/open-store.js'
import { openSqliteStore, SQLITE_SCHEMA_VERSION } from '../../src/client/storage/sqlite-store.js'
import { expectPetrelError, runDeviceStoreConformance, type StoreHarness } from './device-store.conformance.js'

const text = (s: string): Uint8Array => new TextEncoder().encode(s)

const tempDir = (): Promise<string> => mkdtemp(join(tmpdir(), 'petrel-store-'))

/** Tracks every store it opens so cleanup can close them all, whichever the test left open. */
function harness(open: () => Promise<DeviceStore>, remove: () => Promise<void>): Promise<StoreHarness> {
  const opened: DeviceStore[] = []
  const track = async (): Promise<DeviceStore> => {
    const store = await open()
    opened.push(store)
    return store
  }
  return track().then((store) => ({
    store,
    reopen: track,
    cleanup: async () => {
      await Promise.all(opened.map((s) => s.close().catch(() => undefined)))
      await remove()
    },
  }))
}

for (const writer of ['thread', 'inline'] as const) {
  runDeviceStoreConformance(`SqliteStore (commits ${writer === 'thread' ? 'on the writer thread' : 'inline'})`, async () => {
    const dir = await tempDir()
    const file = join(dir, 'store.db')
    return harness(
      () => openSqliteStore(file, { writer }),
      () => rm(dir, { recursive: true, force: true }),
    )
  })
}

runDeviceStoreConformance('IndexedDbStore (fake-indexeddb)', async () => {
  const idb = new IDBFactory()
  return harness(
    () => openIndexedDbStore('petrel:test', idb),
    async () => undefined,
  )
})

describe('openSqliteStore', () => {
  const dirs: string[] = []
  const dir = async (): Promise<string> => {
    const d = await tempDir()
    dirs.push(d)
    return d
  }
  afterEach(async () => {
    await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })))
  })

  it('creates missing parent directories and a WAL file at the current schema version', async () => {
    const file = join(await dir(), 'nested', 'deeper', 'store.db')
    const store = await openSqliteStore(file)
    await store.commit({ put: [['k', text('v')]] })
    await store.close()

    const raw = new Database(file, { readonly: true })
    try {
      expect(raw.pragma('journal_mode', { simple: true })).toBe('wal')
      expect(raw.pragma('user_version', { simple: true })).toBe(SQLITE_SCHEMA_VERSION)
      expect(raw.prepare('SELECT key FROM kv').all()).toEqual([{ key: 'k' }])
    } finally {
      raw.close()
    }
  })

  it('refuses a file written by a newer schema version, leaving it untouched', async () => {
    const file = join(await dir(), 'future.db')
    const raw = new Database(file)
    raw.pragma(`user_version = ${SQLITE_SCHEMA_VERSION + 1}`)
    raw.close()
    const err = await expectPetrelError(openSqliteStore(file), 'version_mismatch')
    expect(err.message).toMatch(/newer/)
    const check = new Database(file, { readonly: true })
    expect(check.pragma('user_version', { simple: true })).toBe(SQLITE_SCHEMA_VERSION + 1)
    check.close()
  })

  it('reports a path it cannot open as storage_failed', async () => {
    const d = await dir()
    await writeFile(join(d, 'plain-file'), 'not a directory')
    await expectPetrelError(openSqliteStore(join(d, 'plain-file', 'store.db')), 'storage_failed')
  })

  it('commits on the writer thread while the event loop keeps running (inline, the loop stops)', async () => {
    const ticksDuring = async (writer: 'thread' | 'inline') => {
      const store = await openSqliteStore(join(await dir(), `${writer}.db`), { writer })
      const rows = Array.from({ length: 400 }, (_, i) => ({ convId: 'A', doc: 'inner' as const, bytes: new Uint8Array(100_000).fill(i) }))
      let ticks = 0
      const timer = setInterval(() => ticks++, 1)
      await store.commit({ append: rows })
      clearInterval(timer)
      expect((await store.loadLog('A', 'inner')).length).toBe(400)
      await store.close()
      return ticks
    }
    expect(await ticksDuring('inline')).toBe(0)
    expect(await ticksDuring('thread')).toBeGreaterThan(0)
  })

  it.each(['thread', 'inline'] as const)('reports a full database as storage_failed and keeps earlier commits (commits %s)', async (writer) => {
    const file = join(await dir(), 'small.db')
    const store = await openSqliteStore(file, { maxSizeBytes: 64 * 1024, writer })
    await store.commit({ put: [['keep', text('kept')]], append: [{ convId: 'A', doc: 'outer', bytes: text('a1') }] })

    const err = await expectPetrelError(
      store.commit({
        put: [['big', new Uint8Array(256 * 1024)]],
        append: [{ convId: 'A', doc: 'outer', bytes: text('a2') }],
      }),
      'storage_failed',
    )
    expect(err.message).toMatch(/SQLITE_FULL/)
    expect(await store.get('big')).toBeUndefined()
    expect(new TextDecoder().decode(await store.get('keep'))).toBe('kept')
    expect((await store.loadLog('A', 'outer')).length).toBe(1)
    await store.close()

    const reopened = await openSqliteStore(file)
    expect(new TextDecoder().decode(await reopened.get('keep'))).toBe('kept')
    expect(await reopened.get('big')).toBeUndefined()
    await reopened.close()
  })
})

describe('openIndexedDbStore', () => {
  afterEach(() => {
    vi.restoreAllMocks()
  })

  it('commits in one strict-durability readwrite transaction per tick', async () => {
    const idb = new IDBFactory()
    const store = await openIndexedDbStore('petrel:strict', idb)
    const spy = vi.spyOn(IDBDatabase.prototype, 'transaction')
    await Promise.all([store.commit({ put: [['a', text('1')]] }), store.commit({ put: [['b', text('2')]] })])
    const writes = spy.mock.calls.filter((call) => call[1] === 'readwrite')
    expect(writes).toHaveLength(1)
    expect(writes[0]?.[2]).toEqual({ durability: 'strict' })
    await store.close()
  })

  it('reports QuotaExceededError as storage_failed naming it, and keeps earlier commits', async () => {
    const idb = new IDBFactory()
    const store = await openIndexedDbStore('petrel:quota', idb)
    await store.commit({ put: [['keep', text('kept')]], append: [{ convId: 'A', doc: 'outer', bytes: text('a1') }] })

    let full = true
    type Write = (this: IDBObjectStore, value: unknown, key?: IDBValidKey) => IDBRequest<IDBValidKey>
    const quota = (original: Write): Write =>
      function (this: IDBObjectStore, ...args: Parameters<Write>) {
        if (full && this.name === 'log') throw new DOMException('The quota has been exceeded.', 'QuotaExceededError')
        return original.apply(this, args)
      }
    const { add, put } = IDBObjectStore.prototype
    vi.spyOn(IDBObjectStore.prototype, 'add').mockImplementation(quota(add))
    vi.spyOn(IDBObjectStore.prototype, 'put').mockImplementation(quota(put))

    const err = await expectPetrelError(
      store.commit({ put: [['new', text('x')]], append: [{ convId: 'A', doc: 'outer', bytes: text('a2') }] }),
      'storage_failed',
    )
    expect(err.message).toMatch(/QuotaExceededError/)
    expect(await store.get('new')).toBeUndefined()
    expect(new TextDecoder().decode(await store.get('keep'))).toBe('kept')
    expect((await store.loadLog('A', 'outer')).map((r) => new TextDecoder().decode(r.bytes))).toEqual(['a1'])

    // Once space frees up, the same store works again.
    full = false
    await store.commit({ append: [{ convId: 'A', doc: 'outer', bytes: text('a2') }] })
    expect(await store.loadLog('A', 'outer')).toHaveLength(2)
    await store.close()
  })

  it('closes itself when another tab upgrades the database, without blocking it', async () => {
    const idb = new IDBFactory()
    const store = await openIndexedDbStore('petrel:upgrade', idb)
    await store.commit({ put: [['k', text('v')]] })

    const upgraded = await new Promise<globalThis.IDBDatabase>((resolve, reject) => {
      const req = idb.open('petrel:upgrade', INDEXEDDB_SCHEMA_VERSION + 1)
      req.onsuccess = () => resolve(req.result)
      req.onerror = () => reject(req.error)
      req.onblocked = () => reject(new Error('blocked'))
    })
    upgraded.close()
    const err = await expectPetrelError(store.get('k'), 'closed')
    expect(err.message).toMatch(/another tab/)
    await expectPetrelError(store.commit({ put: [['k', text('w')]] }), 'closed')
    await store.close()
  })

  it('refuses a database written by a newer version', async () => {
    const idb = new IDBFactory()
    await new Promise<void>((resolve, reject) => {
      const req = idb.open('petrel:future', INDEXEDDB_SCHEMA_VERSION + 5)
      req.onsuccess = () => {
        req.result.close()
        resolve()
      }
      req.onerror = () => reject(req.error)
    })
    await expectPetrelError(openIndexedDbStore('petrel:future', idb), 'version_mismatch')
  })

  it('fails clearly when there is no IndexedDB', async () => {
    expect((globalThis as { indexedDB?: unknown }).indexedDB).toBeUndefined()
    const err = await expectPetrelError(openIndexedDbStore('petrel:none'), 'storage_failed')
    expect(err.message).toMatch(/IndexedDB is not available/)
  })
})

describe('openDeviceStore', () => {
  afterEach(() => {
    vi.unstubAllGlobals()
  })

  it('uses a given store object as is', async () => {
    const store = await openSqliteStore(':memory:')
    expect(await openDeviceStore({ storage: store })).toBe(store)
    await store.close()
  })

  it('opens SQLite for a path on Node', async () => {
    const d = await tempDir()
    try {
      const store = await openDeviceStore({ storage: join(d, 'x', 'store.db') })
      expect(store.kind).toBe('sqlite')
      await store.close()
    } finally {
      await rm(d, { recursive: true, force: true })
    }
  })

  it('refuses a SQLite path outside Node', async () => {
    const { process } = globalThis
    // Swapped only for the synchronous part of the call, where the environment is checked.
    vi.stubGlobal('process', undefined)
    const pending = openDeviceStore({ storage: './store.db' })
    vi.stubGlobal('process', process)
    const err = await expectPetrelError(pending, 'invalid_argument')
    expect(err.message).toMatch(/SQLite/)
  })

  it('opens the IndexedDB database petrel:<storageKey> when no storage is given', async () => {
    const idb = new IDBFactory()
    vi.stubGlobal('indexedDB', idb)
    const store = await openDeviceStore({ storageKey: 'alice' })
    const fallback = await openDeviceStore({})
    expect(store.kind).toBe('indexeddb')
    expect((await idb.databases()).map((d) => d.name).sort()).toEqual(['petrel:alice', 'petrel:default'])
    await Promise.all([store.close(), fallback.close()])
  })

  it('explains what to pass when there is no storage at all', async () => {
    const err = await expectPetrelError(openDeviceStore({}), 'storage_failed')
    expect(err.message).toBe("no storage: pass `storage: './file.db'` on Node or provide a global indexedDB")
  })
})
