import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

const OFFLINE = 'ws://127.0.0.1:9'

describe("open: 'lazy'", () => {
  it('starts from each conversation’s summary (title, last 50, unread) and loads the documents in the background', async () => {
    world = new World()
    const storage = join(world.dir, 'lazy.db')
    const writer = await world.client('writer', { relay: OFFLINE, storage, open: 'lazy' })
    writer.disconnect()
    const conv = await writer.createConversation({ title: 'Long one' })
    const sent = Array.from({ length: 300 }, (_, i) => `offline ${i}`)
    for (let i = 0; i < sent.length; i += 100) await Promise.all(sent.slice(i, i + 100).map((t) => conv.send(t)))
    await writer.close()

    const again = await world.client('again', { relay: OFFLINE, storage, open: 'lazy' })
    const [reopened] = await again.conversations()
    expect(reopened!.loaded).toBe(false)
    expect(reopened!.title).toBe('Long one')
    expect(texts(reopened!)).toEqual(sent.slice(-50))
    expect(reopened!.messages().every((m) => m.status === 'pending' && m.mine)).toBe(true)
    // The newest few, from the summary too.
    expect(reopened!.lastMessages(3).map((m) => m.text)).toEqual(sent.slice(-3))
    let heard = 0
    reopened!.subscribe(() => heard++)
    await reopened!.ready()
    expect(reopened!.loaded).toBe(true)
    expect(texts(reopened!)).toEqual(sent)
    await until(() => heard > 0, 2000, 'subscribers told')
    // Writing waits for the documents by itself.
    await reopened!.send('after the lazy start')
    expect(texts(reopened!).at(-1)).toBe('after the lazy start')
    expect(reopened!.lastMessages(2).map((m) => m.text)).toEqual([sent.at(-1), 'after the lazy start'])
    expect(reopened!.lastMessages(0)).toEqual([])
    expect(() => reopened!.lastMessages(-1)).toThrow(expect.objectContaining({ code: 'invalid_argument' }))
  })

  it('never shows a summary older than what is stored: a write after it makes that conversation load at start', async () => {
    world = new World()
    const storage = join(world.dir, 'stale.db')
    const a = await world.client('a', { relay: OFFLINE, storage, open: 'lazy' })
    a.disconnect()
    const conv = await a.createConversation({ title: 'Changes' })
    await conv.send('first')
    const quiet = await a.createConversation({ title: 'Unchanged' })
    await quiet.send('only')
    await a.close()
    // A session that keeps no summaries (the default) writes after the stored summary.
    const b = await world.client('b', { relay: OFFLINE, storage })
    b.disconnect()
    const c = (await b.conversations()).find((x) => x.title === 'Changes')
    await c!.send('second')
    await b.close()
    const d = await world.client('d', { relay: OFFLINE, storage, open: 'lazy' })
    const all = await d.conversations()
    const e = all.find((x) => x.title === 'Changes')
    expect(e!.loaded).toBe(true)
    expect(texts(e!)).toEqual(['first', 'second'])
    // Only the conversation written after its summary: the other starts from its own.
    const f = all.find((x) => x.title === 'Unchanged')
    expect(f!.loaded).toBe(false)
    expect(texts(f!)).toEqual(['only'])
  })

  it('the default opens everything before createClient resolves', async () => {
    world = new World()
    const storage = join(world.dir, 'eager.db')
    const a = await world.client('a', { relay: OFFLINE, storage, open: 'lazy' })
    a.disconnect()
    const conv = await a.createConversation({ title: 'Eager' })
    for (let i = 0; i < 60; i++) await conv.send(`m ${i}`)
    await a.close()
    const b = await world.client('b', { relay: OFFLINE, storage })
    const [c] = await b.conversations()
    expect(c!.loaded).toBe(true)
    expect(texts(c!)).toHaveLength(60)
  })
})
