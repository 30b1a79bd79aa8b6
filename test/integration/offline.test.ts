import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { atLeastSent, pair, texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

describe('offline send', () => {
  it('keeps messages pending across a reload and sends them in order when the relay returns', async () => {
    world = new World()
    const relay = await world.relay()
    const { alice, aliceConv, bobConv } = await pair(world)
    const convId = aliceConv.id
    await relay.close()
    await until(() => alice.connection !== 'online', 5000, 'alice notices the relay is gone')

    const sent = []
    for (const text of ['one', 'two', 'three']) sent.push(await aliceConv.send(text))
    expect(sent.map((m) => m.status)).toEqual(['pending', 'pending', 'pending'])
    expect(texts(aliceConv).slice(-3)).toEqual(['one', 'two', 'three'])

    // A reload: the client is closed and re-created on the same storage.
    await alice.close()
    const alice2 = await world.client('alice')
    const conv2 = (await alice2.conversations()).find((c) => c.id === convId)!
    expect(conv2.messages().slice(-3).map((m) => [m.text, m.status])).toEqual([
      ['one', 'pending'],
      ['two', 'pending'],
      ['three', 'pending'],
    ])

    await world.relay()
    await until(() => conv2.messages().every((m) => atLeastSent(m.status)), 10_000, 'all sent')
    await until(() => texts(bobConv).length === 3, 10_000, 'bob has them')
    expect(texts(bobConv)).toEqual(['one', 'two', 'three'])
  })
})

describe('the clock of a message sent offline', () => {
  it('is what every change the app hears shows, from the first: never ✓ before the relay has it', async () => {
    world = new World()
    await world.relay()
    const { alice, aliceConv } = await pair(world)
    alice.disconnect()
    await until(() => alice.connection === 'offline')
    const seen: string[] = []
    aliceConv.subscribe(() => {
      for (const m of aliceConv.messages()) seen.push(`${m.text}:${m.status}`)
    })
    const sent = await Promise.all([aliceConv.send('one'), aliceConv.send('two')])
    const third = await aliceConv.send('three')
    expect([...sent, third].map((m) => m.status)).toEqual(['pending', 'pending', 'pending'])
    await new Promise((r) => setTimeout(r, 50))
    expect([...new Set(seen)].sort()).toEqual(['one:pending', 'three:pending', 'two:pending'])
    alice.connect()
    await until(() => aliceConv.messages().every((m) => atLeastSent(m.status)), 10_000, '✓ once online')
  })
})

describe('offline recipient', () => {
  for (const restart of [false, true]) {
    it(`gets all 100 messages once each, in order${restart ? ', across a relay restart' : ''}`, async () => {
      world = new World()
      await world.relay()
      const { bob, aliceConv, bobConv } = await pair(world)
      const convId = bobConv.id
      await bob.close()
      for (let i = 0; i < 100; i++) await aliceConv.send(`m${i}`)
      await until(() => aliceConv.messages().every((m) => atLeastSent(m.status)), 10_000, 'all sent')
      if (restart) {
        await world.relays.at(-1)!.close()
        await world.relay()
      }
      const bob2 = await world.client('bob')
      const conv = (await bob2.conversations()).find((c) => c.id === convId)!
      await until(() => texts(conv).length === 100, 10_000, 'bob has 100')
      expect(texts(conv)).toEqual(Array.from({ length: 100 }, (_, i) => `m${i}`))
      expect(new Set(conv.messages().map((m) => m.id)).size).toBe(100)
    })
  }
})

describe('concurrent offline writers', () => {
  it('converge to the identical list', async () => {
    world = new World()
    await world.relay()
    const { alice, bob, aliceConv, bobConv } = await pair(world)
    alice.disconnect()
    bob.disconnect()
    await until(() => alice.connection === 'offline' && bob.connection === 'offline', 5000, 'both offline')
    for (let i = 0; i < 20; i++) {
      await aliceConv.send(`a${i}`)
      await bobConv.send(`b${i}`)
    }
    alice.connect()
    bob.connect()
    await until(() => texts(aliceConv).length === 40 && texts(bobConv).length === 40, 10_000, 'both have 40').catch((e) => {
      // A rare timeout under CI load: where each side stood.
      const side = (c: typeof alice, conv: typeof aliceConv) => ({ connection: c.connection, shown: texts(conv).length, pending: conv.messages().filter((m) => m.status === 'pending').length })
      console.log('DIAG', JSON.stringify({ alice: side(alice, aliceConv), bob: side(bob, bobConv) }), world.logLines.filter((l) => /warn|error|refus/.test(l)).slice(0, 10))
      throw e
    })
    expect(texts(aliceConv)).toEqual(texts(bobConv))
    // Each author's messages keep their send order.
    expect(texts(aliceConv).filter((t) => t.startsWith('a'))).toEqual(Array.from({ length: 20 }, (_, i) => `a${i}`))
    expect(texts(aliceConv).filter((t) => t.startsWith('b'))).toEqual(Array.from({ length: 20 }, (_, i) => `b${i}`))
  })
})

describe('the shown list', () => {
  it('places messages that arrive late by their send time, as a list built from scratch does, and keeps unchanged messages as the same objects', async () => {
    world = new World()
    await world.relay()
    const { alice, bob, aliceConv, bobConv } = await pair(world)
    bob.disconnect()
    await until(() => bob.connection === 'offline', 5000, 'bob offline')
    for (let i = 0; i < 20; i++) await bobConv.send(`b${i}`)
    // The order is the hybrid clock's, which runs up to 1 ms per send ahead of the wall clock
    // when sends come faster: let the wall clock pass Bob's, so Alice's later sends are later.
    await new Promise((r) => setTimeout(r, 25))
    // Alice's list is built and kept while her own, later messages arrive.
    for (let i = 0; i < 20; i++) {
      await aliceConv.send(`a${i}`)
      expect(texts(aliceConv)).toHaveLength(i + 1)
    }
    bob.connect()
    await until(() => texts(aliceConv).length === 40, 10_000, 'alice has 40')
    const expected = [...Array.from({ length: 20 }, (_, i) => `b${i}`), ...Array.from({ length: 20 }, (_, i) => `a${i}`)]
    expect(texts(aliceConv)).toEqual(expected)
    const first = aliceConv.messages()[0]!
    expect(first.mine).toBe(false)
    await aliceConv.send('a20')
    await until(() => texts(bobConv).length === 41, 10_000, 'bob has 41')
    expect(aliceConv.messages()[0]).toBe(first)
    // Built from scratch on a restart: the same list.
    const storage = join(world.dir, 'alice.db')
    await alice.close()
    const again = await world.client('alice-again', { storage, relay: 'ws://127.0.0.1:9' })
    const [reopened] = await again.conversations()
    expect(texts(reopened!)).toEqual([...expected, 'a20'])
  })
})

describe('a big outbox', () => {
  it('uploads 10,000 offline messages within the frame limit and they reach bob', async () => {
    world = new World()
    const relay = await world.relay()
    const { alice, aliceConv, bobConv } = await pair(world)
    alice.disconnect()
    await until(() => alice.connection === 'offline', 5000, 'offline')
    const sends = []
    for (let i = 0; i < 10_000; i++) sends.push(aliceConv.send(`message number ${i} with some padding to make it realistic`))
    await Promise.all(sends)
    alice.connect()
    await until(() => texts(bobConv).length === 10_000, 60_000, 'bob has 10,000')
    await until(() => aliceConv.messages().every((m) => atLeastSent(m.status)), 30_000, 'all sent')
    expect(texts(bobConv)[9_999]).toBe('message number 9999 with some padding to make it realistic')
    // Within the frame limit: nothing too big, nothing malformed. (Transient refusals that the
    // protocol repairs by design — a gap, a key rotated meanwhile — may happen and are logged.)
    console.log(`big outbox: relay refusals ${JSON.stringify([...relay.metrics.rejected])}`)
    for (const reason of ['envelope too large', 'malformed frame', 'malformed payload']) expect(relay.metrics.rejectedCount(reason)).toBe(0)
  }, 120_000)
})

describe('a conversation created offline', () => {
  it('can be joined before its creator ever reached the relay: the joiner waits, then gets in', async () => {
    world = new World()
    await world.relay()
    const alice = await world.client('alice')
    const bob = await world.client('bob')
    await until(() => alice.connection === 'online' && bob.connection === 'online')
    alice.disconnect()
    await until(() => alice.connection === 'offline')
    const conv = await alice.createConversation({ title: 'made offline' })
    const invite = await conv.invite()
    await conv.send('written before the relay knew')
    const bobConv = await bob.join(invite)
    expect(bobConv.id).toBe(conv.id)
    alice.connect()
    await until(() => texts(bobConv).includes('written before the relay knew'), 15_000, 'bob gets in once alice uploads')
    expect(bobConv.title).toBe('made offline')
  }, 30_000)
})
