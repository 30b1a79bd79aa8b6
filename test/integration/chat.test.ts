import { afterEach, describe, expect, it } from 'vitest'
import { atLeastSent, pair, texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

describe('chat between two devices', () => {
  it('delivers messages both ways within a second on loopback', async () => {
    world = new World()
    await world.relay()
    const { aliceConv, bobConv } = await pair(world)
    const t0 = Date.now()
    await aliceConv.send('hello bob')
    await until(() => texts(bobConv).includes('hello bob'), 1000, 'bob receives')
    const aToB = Date.now() - t0
    await bobConv.send('hi alice')
    await until(() => texts(aliceConv).includes('hi alice'), 1000, 'alice receives')
    expect(aToB).toBeLessThan(1000)
    expect(texts(aliceConv)).toEqual(texts(bobConv))
    const mine = aliceConv.messages().find((m) => m.text === 'hello bob')!
    expect(mine.mine).toBe(true)
    expect(bobConv.messages().find((m) => m.text === 'hello bob')!.authorName).toBe('alice')
    await until(() => atLeastSent(aliceConv.messages().find((m) => m.text === 'hello bob')?.status), 1000, 'sent')
    expect(bobConv.title).toBe('Trip')
  })
})
