/**
 * Yjs client ids across sessions. A device writes on from the ids its last session closed with
 * (writer-ids.ts), so a conversation opened many times does not collect an id per session; but
 * never after a session that may have sent something its disk does not hold, or a change would
 * be made twice from one (client, clock).
 */
import { copyFileSync, existsSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { IDBFactory } from 'fake-indexeddb'
import { decodeWriterIds, encodeWriterIds, keyOf } from '../../src/client/conversation-record.js'
import { openIndexedDbStore } from '../../src/client/storage/indexeddb-store.js'
import type { Batch } from '../../src/client/storage/device-store.js'
import { openDeviceStore } from '../../src/client/storage/open-store.js'
import { onDisk, texts, until, World, type Client } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

/** Alice (on her own disk) and Bob in one conversation, both online. */
async function aliceAndBob() {
  world = new World()
  await world.relay()
  const alice = await world.client('alice')
  const bob = await world.client('bob')
  await until(() => alice.connection === 'online' && bob.connection === 'online', 10_000, 'clients online')
  const aliceConv = await alice.createConversation({ title: 'ids' })
  const bobConv = await bob.join(await aliceConv.invite())
  // Alice holds Bob's join before she first closes: one folded later is a device that came in,
  // which rightly gives her a fresh id.
  await until(() => aliceConv.membershipState.devices.size === 2, 10_000, 'alice has bob’s join')
  return { alice, bob, aliceConv, bobConv }
}

/**
 * Alice's next session on her disk: her one conversation, caught up with the relay. Then it has
 * chosen whether to write on from the last session's ids.
 */
async function reopen(client: Client) {
  await until(() => client.connection === 'online', 10_000, 'alice online again')
  const [conv] = await client.conversations()
  await conv!.whenSynced(10_000)
  return conv!
}

/** Alice sends `text`, Bob has it, and Alice closes cleanly: her ids are left to the next session. */
async function aliceLeavesIds(text: string) {
  const { alice, aliceConv, bobConv } = await aliceAndBob()
  await aliceConv.send(text)
  await until(() => texts(bobConv).includes(text), 10_000, 'bob has it')
  const innerId = aliceConv.doc.clientID
  await alice.close()
  return { bobConv, innerId }
}

/** Alice's next session on a disk of the outside world whose commits throw `error` while `fails` says so. */
async function onFailingDisk(error: string, fails: (batch: Batch) => boolean) {
  const disk = await openDeviceStore({ storage: join(world.dir, 'alice.db') })
  const client = await world.client('alice-2', {
    storage: onDisk(disk, async (batch) => {
      if (fails(batch)) throw new Error(error)
      return disk.commit(batch)
    }),
  })
  return { client, conv: await reopen(client) }
}

/** Outer client ids the relay has bound in the room (each is a row in its index, for good). */
const outerIds = async (room: string) => (await world.relays[0]!.store.loadRoom(room))!.clients.size

describe('client ids across sessions', () => {
  it('writes on from the same inner and outer client ids after a clean close, and every message arrives in order', async () => {
    const { alice, bobConv, aliceConv } = await aliceAndBob()
    await aliceConv.send('one')
    await until(() => texts(bobConv).includes('one'), 10_000, 'bob has the first')
    const innerId = aliceConv.doc.clientID
    const innerIds = bobConv.doc.store.clients.size
    const outer = await outerIds(aliceConv.id)
    await alice.close()

    // A session that only reads leaves them as they were.
    const reading = await world.client('alice')
    expect((await reopen(reading)).doc.clientID).toBe(innerId)
    await reading.close()

    const sent = ['one']
    for (const session of [2, 3, 4]) {
      const conv = await reopen(await world.client('alice'))
      expect(conv.doc.clientID).toBe(innerId)
      sent.push(`session ${session}`)
      await conv.send(`session ${session}`)
      await until(() => texts(bobConv).length === sent.length, 10_000, `bob has session ${session}'s`)
      await world.clients.at(-1)!.close()
    }
    expect(texts(bobConv)).toEqual(sent)
    // Before this, each session added an id to both documents of every member, and to the
    // relay's index of the room.
    expect(bobConv.doc.store.clients.size).toBe(innerIds)
    expect(await outerIds(bobConv.id)).toBe(outer)
    expect(world.errors.get(world.clients.at(-1)!)).toEqual([])
  })

  it('writes on from the same ids in IndexedDB too', async () => {
    world = new World()
    await world.relay()
    const idb = new IDBFactory()
    const alice = await world.client('alice', { storage: await openIndexedDbStore('petrel:alice', idb) })
    const bob = await world.client('bob')
    await until(() => alice.connection === 'online' && bob.connection === 'online', 10_000, 'clients online')
    const aliceConv = await alice.createConversation({ title: 'ids' })
    const bobConv = await bob.join(await aliceConv.invite())
    await until(() => aliceConv.membershipState.devices.size === 2, 10_000, 'alice has bob’s join')
    await aliceConv.send('one')
    const innerId = aliceConv.doc.clientID
    await alice.close()

    const conv = await reopen(await world.client('alice', { storage: await openIndexedDbStore('petrel:alice', idb) }))
    expect(conv.doc.clientID).toBe(innerId)
    await conv.send('two')
    await until(() => texts(bobConv).length === 2, 10_000, 'bob has both')
    expect(texts(bobConv)).toEqual(['one', 'two'])
  })

  it('takes fresh ids after a session whose local write failed, though the relay took the send: what it holds is never written over', async () => {
    const { bobConv, innerId } = await aliceLeavesIds('stored')

    // Session 2 writes on from the same ids, then its disk fills: its next send reaches the
    // relay (sends go out before their commit lands) but not the disk.
    let full = false
    const { client: second, conv: conv2 } = await onFailingDisk('SQLITE_FULL: database or disk is full', (batch) => full && (batch.append?.length ?? 0) > 0)
    expect(conv2.doc.clientID).toBe(innerId)
    full = true
    await expect(conv2.send('on the relay, not on her disk')).rejects.toMatchObject({ code: 'storage_failed' })
    await until(() => texts(bobConv).includes('on the relay, not on her disk'), 10_000, 'bob has what the relay took')
    await second.close()

    // Session 3 starts from fresh ids. Had it written on from session 1's (what its disk
    // says they reached), its next change would take the clocks of the one the relay holds:
    // the relay would acknowledge it as a resend, and Bob never see it.
    const conv3 = await reopen(await world.client('alice'))
    await conv3.send('after the full disk')
    await until(() => texts(bobConv).includes('after the full disk'), 10_000, 'bob has the next one')
    expect(conv3.doc.clientID).not.toBe(innerId)
    expect(texts(bobConv)).toEqual(['stored', 'on the relay, not on her disk', 'after the full disk'])
  })

  it('sends nothing from resumed ids until their entry is deleted: a send on a disk that fails from the start fails, and the next session may still resume', async () => {
    const { bobConv, innerId } = await aliceLeavesIds('stored')

    // The entry's delete fails, and so does every write of the documents: nothing from the
    // ids may go.
    const { client: second, conv: conv2 } = await onFailingDisk(
      'SQLITE_IOERR: disk I/O error',
      (batch) => (batch.append?.length ?? 0) > 0 || (batch.put?.some(([key]) => key.startsWith('writer:')) ?? false),
    )
    await expect(conv2.send('never left')).rejects.toMatchObject({ code: 'storage_failed' })
    await second.close()

    // Nothing was sent from them, and the entry is still there: the next session writes on.
    const conv3 = await reopen(await world.client('alice'))
    expect(conv3.doc.clientID).toBe(innerId)
    await conv3.send('next')
    await until(() => texts(bobConv).includes('next'), 10_000, 'bob has the next one')
    expect(texts(bobConv)).toEqual(['stored', 'next'])
  })

  it('does not write on from ids a store restored from a backup sent past, even when it sends before it reaches the relay', async () => {
    const { bobConv, innerId } = await aliceLeavesIds('before the backup')
    const disk = join(world.dir, 'alice.db')
    const files = ['', '-wal', '-shm'].filter((suffix) => existsSync(disk + suffix))
    for (const suffix of files) copyFileSync(disk + suffix, `${disk}${suffix}.backup`)

    // A session after the backup writes on from the same ids, and the relay takes it.
    const second = await world.client('alice')
    const conv2 = await reopen(second)
    expect(conv2.doc.clientID).toBe(innerId)
    await conv2.send('after the backup')
    await until(() => texts(bobConv).includes('after the backup'), 10_000, 'bob has the second')
    await second.close()

    // The device is restored from the backup: its entry offers the ids at the old clocks. It
    // starts with the relay out of reach and sends at once: written from those ids, the send
    // would take the clocks of 'after the backup', and the relay drop it as a resend.
    for (const suffix of ['', '-wal', '-shm']) rmSync(disk + suffix, { force: true })
    for (const suffix of files) copyFileSync(`${disk}${suffix}.backup`, disk + suffix)
    await world.relays[0]!.close()
    const third = await world.client('alice')
    const [conv3] = await third.conversations()
    await conv3!.send('after the restore')
    await world.relay()
    await until(() => texts(bobConv).includes('after the restore'), 15_000, 'bob has the third')
    expect(texts(bobConv)).toEqual(['before the backup', 'after the backup', 'after the restore'])
    // Caught up, it holds what it sent after the backup again (its own signed change, bound to it).
    await until(() => texts(conv3!).length === 3, 10_000, 'alice has all three again')
    expect(texts(conv3!)).toEqual(['before the backup', 'after the backup', 'after the restore'])
    expect(conv3!.doc.clientID).not.toBe(innerId)
  })

  it('fails a send loudly, not silently, when a second engine on the same storage took the ids first; the next send goes from fresh ones', async () => {
    const { bobConv, innerId } = await aliceLeavesIds('one')

    // Two processes on one SQLite file (nothing locks it): both resume the same ids.
    const first = await reopen(await world.client('alice'))
    const second = await reopen(await world.client('alice-again', { storage: join(world.dir, 'alice.db') }))
    expect(first.doc.clientID).toBe(innerId)
    expect(second.doc.clientID).toBe(innerId)
    await first.send('from the first')
    // The relay would take the second's change at the first's clocks for a resend, and drop it.
    await expect(second.send('from the second')).rejects.toMatchObject({ code: 'device_in_use' })
    expect(second.messages().find((m) => m.text === 'from the second')?.status).toBe('failed')
    expect(second.doc.clientID).not.toBe(innerId)
    await second.send('the second, again')
    await until(() => texts(bobConv).includes('the second, again'), 10_000, 'bob has the second engine’s next send')
    expect(texts(bobConv)).toEqual(['one', 'from the first', 'the second, again'])
  })

  it('gives the ids up when its own changes from them come back from elsewhere, so its next send is not lost behind them', async () => {
    const { bobConv, innerId } = await aliceLeavesIds('one')
    const first = await reopen(await world.client('alice'))
    const secondClient = await world.client('alice-again', { storage: join(world.dir, 'alice.db') })
    const second = await reopen(secondClient)
    expect(second.doc.clientID).toBe(innerId)
    await first.send('from the first')
    await until(() => texts(bobConv).includes('from the first'), 10_000, 'bob has it')
    // The second engine catches up (a reconnect): the first one's row moves its outer id on.
    // Writing on from the inner id, its next change would take the clocks of the first's, and
    // every member would keep the first's.
    secondClient.disconnect()
    secondClient.connect()
    await until(() => texts(second).includes('from the first'), 10_000, 'the second engine has the first one’s send')
    expect(second.doc.clientID).not.toBe(innerId)
    await second.send('from the second')
    await until(() => texts(bobConv).includes('from the second'), 10_000, 'bob has the second engine’s send')
    expect(texts(bobConv)).toEqual(['one', 'from the first', 'from the second'])
    // Its awareness moved to the fresh outer id with no state to carry: it still closes cleanly.
    await secondClient.close()
  })

  it('leaves no ids to the next session once the relay refused its outer id as another device’s, so that session’s sends arrive', async () => {
    const { alice, bob, aliceConv, bobConv } = await aliceAndBob()
    await bobConv.send('from bob')
    await aliceConv.send('from alice')
    await until(() => texts(aliceConv).length === 2 && texts(bobConv).length === 2, 10_000, 'both have both')
    await alice.close()

    // Alice's entry names Bob's outer id, at the clock she holds of it: as if the id her session
    // drew had been his (two random 32-bit ids that met). Nothing on her side can tell.
    const room = aliceConv.id
    const [bobOuter, bound] = [...(await world.relays[0]!.store.loadRoom(room))!.clients].find(([, c]) => c.device === bob.deviceId)!
    const disk = await openDeviceStore({ storage: join(world.dir, 'alice.db') })
    const ids = decodeWriterIds((await disk.get(keyOf.writerIds(room)))!)
    await disk.commit({ put: [[keyOf.writerIds(room), encodeWriterIds({ ...ids, outerClient: bobOuter, outerClock: bound.next })]] })
    await disk.close()

    const second = await world.client('alice')
    const conv2 = await reopen(second)
    expect(conv2.doc.clientID).toBe(ids.innerClient)
    await conv2.send('refused')
    await until(() => world.errors.get(second)!.some((e) => e.code === 'refused' && /belongs to another device/.test(e.message)), 10_000, 'the refusal, told to the app')
    await second.close()

    // Left to it, the next session would write from Bob's id again, and be refused again.
    const conv3 = await reopen(await world.client('alice'))
    expect(conv3.doc.clientID).not.toBe(ids.innerClient)
    await conv3.send('after the refusal')
    await until(() => texts(bobConv).includes('after the refusal'), 10_000, 'bob has the next session’s send')
  })

  it('goes on from the last session’s awareness clock, so members see a restarted device typing', async () => {
    const { alice, aliceConv, bobConv } = await aliceAndBob()
    await aliceConv.send('hello')
    await until(() => texts(bobConv).includes('hello'), 10_000, 'bob has it')
    // Each change of the typing flag moves the awareness clock; Bob holds the last one.
    for (let i = 0; i < 4; i++) {
      aliceConv.setTyping(true)
      await until(() => bobConv.typing().length === 1, 10_000, 'bob sees alice typing')
      aliceConv.setTyping(false)
      await until(() => bobConv.typing().length === 0, 10_000, 'bob sees alice stop')
    }
    const innerId = aliceConv.doc.clientID
    await alice.close()

    const conv = await reopen(await world.client('alice'))
    expect(conv.doc.clientID).toBe(innerId)
    conv.setTyping(true)
    await until(() => bobConv.typing().length === 1, 10_000, 'bob sees the restarted alice typing')
  })
})
