import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { Batch, CommitOptions } from '../../src/client/storage/device-store.js'
import { openDeviceStore } from '../../src/client/storage/open-store.js'
import { onDisk, texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

describe('storing what a device receives', () => {
  it('lets received rows, the cursor and acknowledgements wait to share a commit, and still sends ✓✓ once they are stored', async () => {
    world = new World()
    await world.relay()
    const disk = await openDeviceStore({ storage: join(world.dir, 'bob-disk.db') })
    const commits: Array<{ batch: Batch; soon: boolean }> = []
    const bob = await world.client('bob', {
      storage: onDisk(disk, (batch: Batch, options?: CommitOptions) => {
        commits.push({ batch, soon: options?.soon === true })
        return disk.commit(batch, options)
      }),
    })
    const alice = await world.client('alice')
    const aliceConv = await alice.createConversation({ title: 'busy' })
    const bobConv = await bob.join(await aliceConv.invite())
    const sent: string[] = []
    for (let i = 0; i < 40; i++) {
      sent.push(`message ${i}`)
      await aliceConv.send(`message ${i}`)
    }
    await until(() => texts(bobConv).length === 40, 10_000, 'bob shows all 40')
    const last = () => aliceConv.messages().at(-1)!.status
    await until(() => last() === 'delivered' || last() === 'read', 10_000, '✓✓ on her last message')
    expect(texts(bobConv)).toEqual(sent)

    // Commits of received messages carry the rows that brought them (`mseqs:`).
    const received = commits.filter((c) => c.batch.put?.some(([key]) => key.startsWith('mseqs:')))
    const cursors = commits.filter((c) => c.batch.put?.some(([key]) => key.startsWith('cursor:')))
    expect(received.length).toBeGreaterThan(0)
    expect(cursors.length).toBeGreaterThan(0)
    expect(received.every((c) => c.soon)).toBe(true)
    expect(cursors.every((c) => c.soon)).toBe(true)
    // What he writes himself (his join, his name) does not wait.
    expect(commits.some((c) => !c.soon)).toBe(true)
  })
})
