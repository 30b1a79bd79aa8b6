import { IDBFactory, IDBObjectStore } from 'fake-indexeddb'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { createClient, type PetrelError } from '../../src/client/index.js'
import { openIndexedDbStore } from '../../src/client/storage/indexeddb-store.js'
import { texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  vi.restoreAllMocks()
  await world?.close()
})

describe('local storage failing', () => {
  it('surfaces a full IndexedDB quota as storage_failed through send() and on("error"), and loses nothing stored before', async () => {
    world = new World()
    await world.relay()
    const idb = new IDBFactory()
    const errors: PetrelError[] = []
    const alice = await createClient({ relay: world.url, name: 'alice', storage: await openIndexedDbStore('petrel:alice', idb) })
    alice.on('error', (e) => errors.push(e))
    await until(() => alice.connection === 'online')
    const conv = await alice.createConversation({ title: 'quota' })
    await conv.send('stored before the disk filled')

    // The outside world fills up: every write to the log store fails with QuotaExceededError.
    const full = (original: IDBObjectStore['put']) =>
      function (this: IDBObjectStore, ...args: Parameters<IDBObjectStore['put']>) {
        if (this.name === 'log') throw new DOMException('The quota has been exceeded.', 'QuotaExceededError')
        return original.apply(this, args)
      }
    const { add, put } = IDBObjectStore.prototype
    vi.spyOn(IDBObjectStore.prototype, 'add').mockImplementation(full(add) as IDBObjectStore['add'])
    vi.spyOn(IDBObjectStore.prototype, 'put').mockImplementation(full(put))

    await expect(conv.send('no room for this')).rejects.toMatchObject({ code: 'storage_failed', message: expect.stringMatching(/QuotaExceededError/) })
    expect(errors.some((e) => e.code === 'storage_failed')).toBe(true)
    const failed = conv.messages().find((m) => m.text === 'no room for this')
    expect(failed?.status).toBe('failed')
    expect(failed?.error).toMatch(/storage failed/)

    // Space frees up; a reload shows everything stored before, and nothing half-written.
    vi.restoreAllMocks()
    await alice.close()
    const again = await createClient({ relay: world.url, storage: await openIndexedDbStore('petrel:alice', idb) })
    world.clients.push(again)
    const reopened = (await again.conversations())[0]!
    expect(texts(reopened)).toEqual(['stored before the disk filled'])
  })
})
