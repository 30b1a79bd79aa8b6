import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
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
