import { join } from 'node:path'
import { IDBFactory, IDBObjectStore } from 'fake-indexeddb'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { createClient, type PetrelError } from '../../src/client/index.js'
import { openIndexedDbStore } from '../../src/client/storage/indexeddb-store.js'
import { openDeviceStore } from '../../src/client/storage/open-store.js'
import { openSqliteStore } from '../../src/client/storage/sqlite-store.js'
import { keyOf } from '../../src/client/conversation-record.js'
import { onDisk, texts, until, World } from './harness.js'

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
    // It went to the relay as it was written (online): failed until the relay's ✓ says it has
    // it, which may have come first. Either way the app was told it is not on this disk.
    const failed = conv.messages().find((m) => m.text === 'no room for this')!
    if (failed.status === 'failed') expect(failed.error).toMatch(/storage failed/)
    await until(() => conv.message(failed.id)?.status === 'sent' || conv.message(failed.id)?.status === 'delivered', 10_000, 'the relay’s ✓ clears the failure')

    // Space frees up; a reload shows everything stored before, and nothing half-written.
    vi.restoreAllMocks()
    await alice.close()
    const again = await createClient({ relay: world.url, storage: await openIndexedDbStore('petrel:alice', idb) })
    world.clients.push(again)
    const reopened = (await again.conversations())[0]!
    expect(texts(reopened)).toEqual(['stored before the disk filled'])
  })

  it("never tells a sender ✓✓ for a message this device failed to store, though a later small write fits; the next session stores it and does", async () => {
    world = new World()
    await world.relay()
    const path = join(world.dir, 'alice-disk.db')
    const disk = await openDeviceStore({ storage: path })
    // A nearly full disk (the outside world): while `full`, a received batch (rows and the
    // cursor past them) does not fit; smaller writes still do.
    let full = false
    const nearlyFull = onDisk(disk, async (batch) => {
      if (full && (batch.append?.length ?? 0) > 0 && batch.put?.some(([key]) => key.startsWith('cursor:'))) throw new Error('SQLITE_FULL: database or disk is full')
      return disk.commit(batch)
    })
    const alice = await world.client('alice', { storage: nearlyFull })
    const bob = await world.client('bob')
    const aliceConv = await alice.createConversation({ title: 'nearly full' })
    const bobConv = await bob.join(await aliceConv.invite())
    const statusOf = (text: string) => bobConv.messages().find((m) => m.text === text)?.status
    await bobConv.send('before')
    await until(() => statusOf('before') === 'delivered' || statusOf('before') === 'read', 10_000, '✓✓ for what she stored')

    full = true
    await bobConv.send('while full')
    // Shown on her screen (applied), but not stored: she is told, and so is her app.
    await until(() => texts(aliceConv).includes('while full'), 10_000, 'alice shows it')
    await until(() => world.errors.get(alice)!.some((e) => e.code === 'storage_failed' || /could not store received/.test(e.message)), 10_000, 'alice told')
    // Her own send is acknowledged by the relay, and that moves her stored cursor with a small
    // write that fits: it must not carry a ✓✓ for Bob's message.
    await aliceConv.send('mine')
    await until(() => aliceConv.messages().find((m) => m.text === 'mine')?.status !== 'pending', 10_000, 'her ✓')
    await bobConv.send('after')
    await until(() => texts(aliceConv).includes('after'), 10_000, 'alice shows the next')
    await new Promise((r) => setTimeout(r, 500))
    expect(statusOf('while full')).toBe('sent')
    expect(statusOf('after')).toBe('sent')

    // Space frees up; her next session fetches what it lacks, stores it, and says so.
    await alice.close()
    full = false
    const again = await world.client('alice', { storage: path })
    const reopened = await until(async () => (await again.conversations())[0])
    await until(() => texts(reopened).includes('while full') && texts(reopened).includes('after'), 10_000, 'the next session has them')
    await until(() => statusOf('while full') === 'delivered' || statusOf('while full') === 'read', 10_000, '✓✓ once stored')
  })

  it('shows a message its disk could not store but the relay could as failed only until the relay’s ✓, and has it back after a restart', async () => {
    world = new World()
    await world.relay()
    const path = join(world.dir, 'alice.db')
    const disk = await openDeviceStore({ storage: path })
    let full = false
    const store = onDisk(disk, (batch, options) => {
      if (full && batch.append?.some((a) => a.doc === 'outer')) return Promise.reject(new Error('SQLITE_FULL: database or disk is full'))
      return disk.commit(batch, options)
    })
    const alice = await createClient({ relay: world.url, name: 'alice', storage: store })
    world.clients.push(alice)
    const errors: PetrelError[] = []
    alice.on('error', (e) => errors.push(e))
    const bob = await world.client('bob')
    await until(() => alice.connection === 'online' && bob.connection === 'online')
    const conv = await alice.createConversation({ title: 'full disk' })
    const bobConv = await bob.join(await conv.invite())
    await conv.whenSynced(5000)
    full = true
    await expect(conv.send('the disk is full')).rejects.toMatchObject({ code: 'storage_failed', message: expect.stringContaining('SQLITE_FULL') })
    full = false
    expect(errors.map((e) => e.code)).toContain('storage_failed')
    // It went: Bob has it, and Alice's ticks come to say so instead of "failed" for good.
    await until(() => texts(bobConv).includes('the disk is full'), 10_000, 'bob has it')
    const shown = conv.messages().find((m) => m.text === 'the disk is full')!
    await until(() => conv.message(shown.id)?.status === 'delivered', 10_000, '✓✓')
    await conv.send('after')
    await alice.close()
    // Not on Alice's disk, but on the relay's: the next session has it again.
    const again = await world.client('alice', { storage: path })
    const reopened = await until(async () => (await again.conversations())[0])
    await until(() => texts(reopened).includes('the disk is full') && texts(reopened).includes('after'), 10_000, 'both back')
  })

  it('starts with every other conversation when one stored record is corrupt, says which, and leaves its bytes as they were', async () => {
    world = new World()
    const storage = join(world.dir, 'alice.db')
    const alice = await world.client('alice', { relay: 'ws://127.0.0.1:9', storage })
    alice.disconnect()
    const good = await alice.createConversation({ title: 'good' })
    await good.send('still here')
    const bad = await alice.createConversation({ title: 'bad' })
    await alice.close()
    // The disk hands back the record of one conversation cut short.
    const store = await openSqliteStore(storage)
    const stored = (await store.get(keyOf.conv(bad.id)))!
    const damaged = stored.subarray(0, stored.length - 5)
    await store.commit({ put: [[keyOf.conv(bad.id), damaged]] })
    await store.close()

    const again = await createClient({ relay: 'ws://127.0.0.1:9', storage })
    world.clients.push(again)
    const errors: PetrelError[] = []
    again.on('error', (err) => errors.push(err))
    again.disconnect()
    expect((await again.conversations()).map((c) => c.id)).toEqual([good.id])
    const reopened = (await again.conversations())[0]!
    await reopened.ready()
    expect(texts(reopened)).toEqual(['still here'])
    expect(again.unreadableConversations()).toEqual([{ id: bad.id, error: expect.objectContaining({ code: 'malformed', conversationId: bad.id }) }])
    await until(() => errors.length > 0, 2000, 'the app told')
    expect(errors.map((e) => [e.code, e.conversationId])).toEqual([['malformed', bad.id]])
    await again.close()
    const check = await openSqliteStore(storage)
    expect(await check.get(keyOf.conv(bad.id))).toEqual(damaged)
    await check.close()
  })

  it('starts with the others when a conversation’s outbox row is cut short, or its record is from a newer version', async () => {
    for (const [key, damage] of [
      ['sent:', (b: Uint8Array) => b.subarray(0, b.length - 3)],
      ['conv:', (b: Uint8Array) => Uint8Array.of(0x7f, ...b.subarray(1))],
    ] as const) {
      world = new World()
      const storage = join(world.dir, 'alice.db')
      const alice = await world.client('alice', { relay: 'ws://127.0.0.1:9', storage })
      alice.disconnect()
      const good = await alice.createConversation({ title: 'good' })
      const bad = await alice.createConversation({ title: 'bad' })
      await bad.send('pending here')
      await alice.close()
      const store = await openSqliteStore(storage)
      const [stored] = (await store.list(key === 'conv:' ? keyOf.conv(bad.id) : `sent:${bad.id}:`))
      await store.commit({ put: [[stored![0], damage(stored![1])]] })
      await store.close()
      const again = await createClient({ relay: 'ws://127.0.0.1:9', storage })
      world.clients.push(again)
      again.disconnect()
      expect((await again.conversations()).map((c) => c.id), key).toEqual([good.id])
      expect(again.unreadableConversations().map((u) => [u.id, u.error.code]), key).toEqual([[bad.id, key === 'conv:' ? 'version_mismatch' : 'malformed']])
      await world.close()
    }
  })

  it('moves a conversation started from its summary to unreadableConversations() when its rows fail to load in the background', async () => {
    world = new World()
    const storage = join(world.dir, 'alice.db')
    const offline = { relay: 'ws://127.0.0.1:9', storage, open: 'lazy' as const }
    const alice = await world.client('alice', offline)
    alice.disconnect()
    const good = await alice.createConversation({ title: 'good' })
    await good.send('still here')
    const bad = await alice.createConversation({ title: 'bad' })
    await bad.send('pending here')
    // Closing stores both summaries: the next start lists both from them at once.
    await alice.close()
    const store = await openSqliteStore(storage)
    const [row] = await store.list(`sent:${bad.id}:`)
    await store.commit({ put: [[row![0], row![1].subarray(0, row![1].length - 3)]] })
    await store.close()

    const again = await createClient({ name: 'alice', ...offline })
    world.clients.push(again)
    const errors: PetrelError[] = []
    again.on('error', (err) => errors.push(err))
    again.disconnect()
    const listed = await again.conversations()
    expect(listed.map((c) => c.id).sort()).toEqual([good.id, bad.id].sort())
    const badConv = listed.find((c) => c.id === bad.id)!
    await until(() => again.unreadableConversations().length > 0, 5000, 'the background load to fail')
    expect(again.unreadableConversations()).toEqual([{ id: bad.id, error: expect.objectContaining({ code: 'malformed', conversationId: bad.id }) }])
    expect((await again.conversations()).map((c) => c.id)).toEqual([good.id])
    expect(errors.map((e) => [e.code, e.conversationId])).toEqual([['malformed', bad.id]])
    // The object the app still holds answers with the same typed error, not a hang.
    await expect(badConv.send('more')).rejects.toMatchObject({ code: 'malformed' })
    const goodConv = (await again.conversations())[0]!
    await goodConv.ready()
    expect(texts(goodConv)).toEqual(['still here'])
  })

  it('joins an unreadable conversation again from an invite, and keeps the damaged record aside', async () => {
    world = new World()
    await world.relay()
    const alice = await world.client('alice')
    const storage = join(world.dir, 'bob.db')
    const bob = await world.client('bob', { storage })
    await until(() => alice.connection === 'online' && bob.connection === 'online')
    const aliceConv = await alice.createConversation({ title: 'again' })
    await aliceConv.send('from before')
    const invite = await aliceConv.invite()
    const bobConv = await bob.join(invite)
    await until(() => texts(bobConv).includes('from before'))
    await bob.close()
    const store = await openSqliteStore(storage)
    const stored = (await store.get(keyOf.conv(aliceConv.id)))!
    const damaged = stored.subarray(0, stored.length - 5)
    await store.commit({ put: [[keyOf.conv(aliceConv.id), damaged]] })
    await store.close()
    const again = await createClient({ relay: world.url, storage })
    world.clients.push(again)
    expect(again.unreadableConversations().map((u) => u.id)).toEqual([aliceConv.id])
    const rejoined = await again.join(invite)
    await until(() => texts(rejoined).includes('from before'), 10_000, 'history back')
    expect(again.unreadableConversations()).toEqual([])
    await again.close()
    const check = await openSqliteStore(storage)
    expect(await check.get(`damaged:${keyOf.conv(aliceConv.id)}`)).toEqual(damaged)
    await check.close()
  })
})
