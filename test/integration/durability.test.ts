import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { Conversation } from '../../src/client/index.js'
import { FrameType } from '../../src/shared/wire.js'
import { FrameProxy } from './frame-proxy.js'
import { atLeastSent, texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

describe('node durability', () => {
  it('keeps a message whose send() resolved when the process is killed with SIGKILL, and sends it after restart', async () => {
    world = new World()
    const relay = await world.relay()
    const alice = await world.client('alice')
    const bob = await world.client('bob')
    await until(() => alice.connection === 'online' && bob.connection === 'online')
    const conv = await alice.createConversation({ title: 't' })
    const bobConv = await bob.join(await conv.invite())
    await alice.close()
    // The relay is down while the child sends, so the message can only survive on disk.
    await relay.close()
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(import.meta.dirname, '../fixtures/send-and-wait.ts'), world.url, join(world.dir, 'alice.db'), conv.id, 'survives SIGKILL'],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    let out = ''
    child.stdout.on('data', (d) => {
      out += d
      if (out.includes('SENT')) child.kill('SIGKILL')
    })
    const signal = await new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, s) => resolve(s)))
    expect(signal).toBe('SIGKILL')
    expect(out).toContain('SENT')

    const alice2 = await world.client('alice')
    const conv2 = (await alice2.conversations()).find((c) => c.id === conv.id)!
    expect(conv2.messages().map((m) => [m.text, m.status])).toEqual([['survives SIGKILL', 'pending']])
    await world.relay()
    await until(() => atLeastSent(conv2.messages()[0]?.status), 10_000, 'sent after restart')
    await until(() => texts(bobConv).includes('survives SIGKILL'), 10_000, 'bob receives')
  }, 60_000)
})

describe('closing', () => {
  it('keeps what the app asked for just before close(): a send, a title and a name not awaited are stored and reach the others', async () => {
    world = new World()
    await world.relay()
    const alice = await world.client('alice')
    const bob = await world.client('bob')
    const conv = await alice.createConversation({ title: 'Trip' })
    const bobConv = await bob.join(await conv.invite())
    // A shutdown hook's order: calls made, then close awaited. Before, each call still waited
    // for `ready()` when the close began, and was refused as closed, its text lost.
    const sent = conv.send('said as the app closed')
    const titled = conv.setTitle('Lisbon')
    const named = conv.sayName('Alice M.')
    await alice.close()
    expect((await sent).text).toBe('said as the app closed')
    await titled
    await named
    await expect(conv.send('after close')).rejects.toMatchObject({ code: 'closed' })
    const again = await world.client('alice')
    const reopened = (await again.conversations()).find((c) => c.id === conv.id)!
    expect(texts(reopened)).toEqual(['said as the app closed'])
    expect(reopened.title).toBe('Lisbon')
    await until(() => texts(bobConv).includes('said as the app closed') && bobConv.title === 'Lisbon', 10_000, 'bob has all of it')
    await until(() => bobConv.messages().at(-1)?.authorName === 'Alice M.', 10_000, 'the new name')
  })

  it('closes with a send accepted on a conversation whose key has not come: the send fails closed, nothing waits for good', async () => {
    world = new World()
    await world.relay()
    const alice = await world.client('alice')
    const aliceConv = await alice.createConversation({ title: 'Trip' })
    // Bob hears of the conversation (a Rooms frame) but none of its rows: no key yet.
    const proxy = await FrameProxy.start(
      () => world.url,
      (to, data, send) => {
        if (to === 'device' && data[1] === FrameType.Room) return
        send()
      },
    )
    try {
      const bob = await world.client('bob', { relay: proxy.url })
      const discovered = new Promise<Conversation>((resolve) => bob.on('conversation', (c) => c.id === aliceConv.id && resolve(c)))
      await aliceConv.addMember(await bob.publicIdentity())
      const conv = await discovered
      await new Promise((r) => setTimeout(r, 300))
      const sent = conv.send('hi from bob')
      sent.catch(() => undefined)
      // Before, the send came to wait for the key after close() had woken the waiters: both hung.
      await bob.close()
      await expect(sent).rejects.toMatchObject({ code: 'closed' })
    } finally {
      await proxy.close()
    }
  })

  it('settles every close() call only once closed: a second call does not resolve first', async () => {
    world = new World()
    await world.relay()
    const alice = await world.client('alice')
    const conv = await alice.createConversation({ title: 'Trip' })
    const sends = Array.from({ length: 200 }, (_, i) => conv.send(`m${i}`))
    const order: string[] = []
    const first = alice.close().then(() => order.push('first'))
    const second = alice.close().then(() => order.push('second'))
    await Promise.all([first, second])
    // Before, the second resolved at once (an app exiting then lost sends): now with the first.
    expect(order).toEqual(['first', 'second'])
    expect((await Promise.allSettled(sends)).every((r) => r.status === 'fulfilled')).toBe(true)
    const again = await world.client('alice')
    const reopened = (await again.conversations()).find((c) => c.id === conv.id)!
    expect(reopened.messages()).toHaveLength(200)
  })

  it('ends a join still waiting for the relay when the client closes, with closed, at once', async () => {
    world = new World()
    await world.relay()
    const alice = await world.client('alice')
    const conv = await alice.createConversation({ title: 'Trip' })
    const invite = await conv.invite()
    await world.relays[0]!.close()
    // The relay is gone: the join waits (15 s at most) for its first sync.
    const bob = await world.client('bob')
    const joining = bob.join(invite)
    joining.catch(() => undefined)
    await new Promise((r) => setTimeout(r, 300))
    const started = Date.now()
    await bob.close()
    await expect(joining).rejects.toMatchObject({ code: 'closed' })
    expect(Date.now() - started).toBeLessThan(2_000)
  })
})
