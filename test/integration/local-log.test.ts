/**
 * The device's local log: every change is appended as a row, and a busy session leaves one
 * row per document behind on close, so the next open reads one row instead of thousands.
 */
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { openSqliteStore } from '../../src/client/storage/sqlite-store.js'
import { texts, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

describe('local log', () => {
  it('is compacted to one row per document when a busy conversation closes, and nothing is lost', async () => {
    world = new World()
    const storage = join(world.dir, 'writer.db')
    const writer = await world.client('writer', { relay: 'ws://127.0.0.1:9', storage })
    writer.disconnect()
    const conv = await writer.createConversation({ title: 'busy' })
    const sent = Array.from({ length: 700 }, (_, i) => `offline ${i}`)
    for (let i = 0; i < sent.length; i += 100) await Promise.all(sent.slice(i, i + 100).map((t) => conv.send(t)))
    await writer.close()

    const store = await openSqliteStore(storage)
    expect(await store.loadLog(conv.id, 'inner')).toHaveLength(1)
    expect(await store.loadLog(conv.id, 'outer')).toHaveLength(1)
    await store.close()

    // Everything is there after the restart, still waiting in the outbox in order, and it leaves.
    await world.relay()
    const again = await world.client('writer-again', { storage })
    const [reopened] = await again.conversations()
    expect(texts(reopened!)).toEqual(sent)
    expect(reopened!.messages().every((m) => m.status === 'pending')).toBe(true)
  })

  it('is left alone after a quiet session', async () => {
    world = new World()
    const storage = join(world.dir, 'quiet.db')
    const client = await world.client('quiet', { relay: 'ws://127.0.0.1:9', storage })
    client.disconnect()
    const conv = await client.createConversation({ title: 'quiet' })
    await conv.send('one')
    await conv.send('two')
    await client.close()
    const store = await openSqliteStore(storage)
    expect((await store.loadLog(conv.id, 'inner')).length).toBeGreaterThan(1)
    await store.close()
  })
})
