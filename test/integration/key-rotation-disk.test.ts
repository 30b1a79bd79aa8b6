import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { Batch } from '../../src/client/storage/device-store.js'
import { openDeviceStore } from '../../src/client/storage/open-store.js'
import { onDisk, texts, until, World } from './harness.js'

let world: World
/** Released after each test, passed or not: a held write would keep its client from closing. */
const disks: Array<() => void> = []
afterEach(async () => {
  for (const release of disks.splice(0)) release()
  await world?.close()
})

/**
 * A disk (the outside world) that holds the writes `held` picks until released: a slow disk,
 * slow for those writes only. Everything the device issues after one lands after it.
 */
async function slowDisk(path: string, held: (batch: Batch) => boolean) {
  const disk = await openDeviceStore({ storage: path })
  let gate: Promise<void> | undefined
  let open: (() => void) | undefined
  const state = { holding: false, heldWrites: 0 }
  const store = onDisk(disk, async (batch) => {
    if (state.holding && held(batch)) {
      state.heldWrites++
      gate ??= new Promise<void>((r) => (open = r))
      await gate
    }
    return disk.commit(batch)
  })
  const release = () => {
    state.holding = false
    open?.()
  }
  disks.push(release)
  return { store, state, release }
}

describe('key rotation and the disk', () => {
  it("lets a device's sends go out under the new key while the rotation's records are still on their way to its disk", async () => {
    world = new World()
    await world.relay()
    // Alice's disk is slow for writes of outer updates alone: what a rotation's records are.
    const slow = await slowDisk(join(world.dir, 'alice-slow.db'), (b) => (b.append?.length ?? 0) > 0 && b.append!.every((a) => a.doc === 'outer') && !b.put?.length)
    const alice = await world.client('alice', { storage: slow.store })
    const bob = await world.client('bob')
    const aliceConv = await alice.createConversation({ title: 'rotation' })
    const bobConv = await bob.join(await aliceConv.invite())
    await aliceConv.send('before')
    await until(() => texts(bobConv).includes('before'), 10_000, 'bob shows the first message')

    slow.state.holding = true
    const rotated = aliceConv.rotateKey()
    await until(() => slow.state.heldWrites > 0, 10_000, "the rotation's records written")
    const sent = aliceConv.send('after the rotation')
    // Sealed and sent while her disk still holds the records: Bob shows it.
    await until(() => texts(bobConv).includes('after the rotation'), 10_000, 'bob shows the message sent after the rotation')
    expect(slow.state.holding).toBe(true)

    // Once the disk catches up, both settle: the records durable first, then the message.
    slow.release()
    await rotated
    await sent
    await until(() => aliceConv.messages().find((m) => m.text === 'after the rotation')?.status !== 'pending', 10_000, 'her ✓')
    expect(world.errors.get(alice)).toEqual([])
  })

  it("shows what arrives under a new key while storing that key is still on its way to the receiver's disk, and keeps the key", async () => {
    world = new World()
    await world.relay()
    const path = join(world.dir, 'bob-slow.db')
    // Bob's disk is slow for writes of the conversation's record: where the keys he holds are kept.
    const slow = await slowDisk(path, (b) => b.put?.some(([key]) => key.startsWith('conv:')) ?? false)
    const alice = await world.client('alice')
    const bob = await world.client('bob', { storage: slow.store })
    const aliceConv = await alice.createConversation({ title: 'rotation' })
    const bobConv = await bob.join(await aliceConv.invite())
    await aliceConv.send('before')
    await until(() => texts(bobConv).includes('before'), 10_000, 'bob shows the first message')

    slow.state.holding = true
    await aliceConv.rotateKey()
    await aliceConv.send('under the new key')
    await until(() => texts(bobConv).includes('under the new key'), 10_000, 'bob shows the message under the new key')
    expect(slow.state.heldWrites).toBeGreaterThan(0)
    expect(slow.state.holding).toBe(true)

    // The write lands; a later session of Bob's still opens everything.
    slow.release()
    await bob.close()
    world.clients.splice(world.clients.indexOf(bob), 1)
    const again = await world.client('bob', { storage: path })
    const reopened = (await again.conversations()).find((c) => c.id === aliceConv.id)!
    await until(() => texts(reopened).includes('under the new key'), 10_000, 'bob shows it after a restart')
    expect(texts(reopened)).toEqual(['before', 'under the new key'])
    expect(world.errors.get(bob)).toEqual([])
  })
})
