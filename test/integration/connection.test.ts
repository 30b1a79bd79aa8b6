import { createServer as createNetServer } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { WebSocket } from 'ws'
import { createClient } from '../../src/client/index.js'
import { RoomMessage } from '../../src/shared/room-messages.js'
import { CloseCode, FrameType, PROTOCOL_VERSION, writeFrame } from '../../src/shared/wire.js'
import { FrameProxy } from './frame-proxy.js'
import { pair, texts, until, World, rawDevice } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

const timeouts = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length

describe('one socket per device', () => {
  it('carries 50 conversations on one WebSocket, with no per-conversation timers or listener warnings', async () => {
    world = new World()
    const relay = await world.relay()
    const warnings: Error[] = []
    const onWarning = (w: Error) => warnings.push(w)
    process.on('warning', onWarning)
    try {
      const { alice, bob } = await pair(world)
      const timersBefore = timeouts()
      const convs = []
      for (let i = 0; i < 50; i++) {
        const conv = await alice.createConversation({ title: `c${i}` })
        convs.push([conv, await bob.join(await conv.invite())] as const)
      }
      for (const [a, b] of convs) {
        const sent = await a.send(`hello ${a.title}`)
        await until(() => texts(b).length === 1).catch((e) => {
          // A rare timeout under CI load: where the message and Bob's copy stood.
          const x = b as unknown as { provider?: { synced: boolean; wsconnected: boolean }; cursor: { through: number; waiting: number }; held: { size: number } }
          console.log(
            'DIAG',
            JSON.stringify({
              conv: a.title,
              status: a.message(sent.id)?.status,
              bob: { synced: x.provider?.synced, wsconnected: x.provider?.wsconnected, cursor: x.cursor.through, deferred: x.held.size, unresolved: x.cursor.waiting, connection: bob.connection },
              errors: [...world.errors.values()].flat().map((err) => err.message).slice(0, 5),
            }),
            world.logLines.filter((l) => /warn|error/.test(l)).slice(0, 5),
          )
          throw e
        })
      }
      expect(relay.metrics.connections).toBe(2)
      // Acknowledgements wait up to 50 ms after a batch is stored; let those in flight go out.
      await new Promise((r) => setTimeout(r, 300))
      // 2 clients × 50 conversations: no timers per conversation (a handful of slack for in-flight work).
      expect(timeouts() - timersBefore).toBeLessThan(10)
      await new Promise((r) => setTimeout(r, 50))
      expect(warnings.map(String)).toEqual([])
    } finally {
      process.off('warning', onWarning)
    }
  })
})

describe('no path around the relay', () => {
  it('exchanges nothing between two clients of one process while the relay is down', async () => {
    world = new World()
    const relay = await world.relay()
    const { aliceConv, bobConv } = await pair(world)
    await relay.close()
    await aliceConv.send('only via relay')
    await new Promise((r) => setTimeout(r, 500))
    expect(texts(bobConv)).not.toContain('only via relay')
  })
})

describe('access control', () => {
  it('refuses a device without the invite: no entry, no reading, no writing', async () => {
    world = new World()
    const relay = await world.relay()
    const { aliceConv, bobConv } = await pair(world)
    await aliceConv.send('members only')
    const eve = await rawDevice(world.url)
    eve.ws.send(writeFrame({ type: FrameType.Open, room: aliceConv.id, admission: new Uint8Array(0) }))
    await until(() => eve.frames.some((f) => f.type === FrameType.Denied))
    // Writing into the room anyway: dropped and counted, nothing is stored or forwarded.
    eve.ws.send(writeFrame({ type: FrameType.Room, room: aliceConv.id, message: Uint8Array.of(RoomMessage.Sync, 0, 1, 0) }))
    await until(() => relay.metrics.rejectedCount('room not open') >= 1)
    expect(eve.frames.filter((f) => f.type === FrameType.Room)).toEqual([])
    await aliceConv.send('still private')
    await until(() => texts(bobConv).includes('still private'))
    expect(eve.frames.filter((f) => f.type === FrameType.Room)).toEqual([])
    eve.ws.close()
  })

  it('refuses an invite forged by a non-admin', async () => {
    world = new World()
    await world.relay()
    const { bob, bobConv } = await pair(world)
    // Bob is a member but not an admin: his invite is refused by the relay and by clients.
    await expect(bobConv.invite()).rejects.toMatchObject({ code: 'refused' })
    void bob
  })

  it('refuses an unauthenticated connection after the deadline, and a bad signature at once', async () => {
    world = new World()
    await world.relay({ limits: { authTimeoutMs: 200 } })
    const ws = new WebSocket(world.url)
    const code = await new Promise<number>((resolve) => ws.on('close', (c) => resolve(c)))
    expect(code).toBe(CloseCode.AuthTimeout)
    const ws2 = new WebSocket(world.url)
    ws2.on('message', () => ws2.send(writeFrame({ type: FrameType.Auth, certificate: new Uint8Array(10), signature: new Uint8Array(64) })))
    const code2 = await new Promise<number>((resolve) => ws2.on('close', (c) => resolve(c)))
    expect(code2).toBe(CloseCode.Malformed)
  })

  it('closes a connection speaking another protocol version with a named close code', async () => {
    world = new World()
    await world.relay()
    const ws = new WebSocket(world.url)
    ws.on('message', () => ws.send(Uint8Array.of(PROTOCOL_VERSION + 1, FrameType.Heartbeat)))
    const [code, reason] = await new Promise<[number, string]>((resolve) => ws.on('close', (c, r) => resolve([c, r.toString()])))
    expect(code).toBe(CloseCode.VersionMismatch)
    expect(reason).toMatch(/version 2/)
  })

  it('closes an oversized frame with 1009 and cuts off a malformed one', async () => {
    world = new World()
    const relay = await world.relay({ limits: { maxFrameBytes: 4096 } })
    const big = await rawDevice(world.url)
    big.ws.send(new Uint8Array(10_000))
    await until(() => big.closed())
    expect(big.closed()!.code).toBe(CloseCode.MessageTooBig)
    // Counted and logged as every other refusal (it left no trace before).
    await until(() => relay.metrics.rejectedCount('frame too large') === 1, 5_000, 'counted')
    expect(world.logLines.some((l) => l.includes('frame over maxFrameBytes'))).toBe(true)
    const bad = await rawDevice(world.url)
    bad.ws.send(Uint8Array.of(PROTOCOL_VERSION, 99, 1, 2, 3))
    await until(() => bad.closed())
    expect(bad.closed()!.code).toBe(CloseCode.Malformed)
    expect(relay.metrics.rejectedCount('malformed frame')).toBe(1)
  })
})

describe('connectivity', () => {
  it('backs off from a relay that admits the device and drops it at once, instead of dialling it again every few hundred ms', async () => {
    world = new World()
    await world.relay()
    let readies = 0
    // A relay in trouble (its database down): each connection is cut right after Ready.
    const proxy = await FrameProxy.start(
      () => world.url,
      (to, data, send, cut) => {
        send()
        if (to === 'device' && data[1] === FrameType.Ready) {
          readies++
          setTimeout(cut, 20)
        }
      },
    )
    try {
      const alice = await world.client('alice', { relay: proxy.url })
      await until(() => readies > 0, 10_000, 'first ready')
      const first = readies
      await new Promise((r) => setTimeout(r, 4_000))
      // Growing delays (0.2, 0.4, 0.8, 1.6, 3.2 s at most): at most 5 more in 4 s. Before, the
      // backoff started again at each Ready: 15–40 dials in 4 s.
      expect(readies - first).toBeLessThanOrEqual(6)
      expect(readies - first).toBeGreaterThan(0)
      await alice.close()
    } finally {
      await proxy.close()
    }
  })

  it('reconnects by itself after the relay drops, and reports each state truthfully', async () => {
    world = new World()
    const relay = await world.relay()
    const alice = await world.client('alice')
    const states: string[] = []
    alice.on('connection', (s) => states.push(s))
    await until(() => alice.connection === 'online')
    await relay.close()
    await until(() => alice.connection === 'connecting')
    await new Promise((r) => setTimeout(r, 300))
    expect(alice.connection).toBe('connecting')
    await world.relay()
    await until(() => alice.connection === 'online', 10_000)
    expect(states).toEqual(['online', 'connecting', 'online'])
  })

  it('closes its socket on the browser offline event and reconnects at once on online', async () => {
    world = new World()
    await world.relay()
    // A browser's window events, faked for Node (the browser is the outside world here).
    const target = new EventTarget()
    const g = globalThis as unknown as Record<string, unknown>
    const saved = { add: g.addEventListener, remove: g.removeEventListener, nav: Object.getOwnPropertyDescriptor(globalThis, 'navigator') }
    g.addEventListener = target.addEventListener.bind(target)
    g.removeEventListener = target.removeEventListener.bind(target)
    Object.defineProperty(globalThis, 'navigator', { value: { onLine: true }, configurable: true })
    try {
      const alice = await createClient({ relay: world.url, storage: `${world.dir}/alice.db` })
      world.clients.push(alice)
      await until(() => alice.connection === 'online')
      target.dispatchEvent(new Event('offline'))
      expect(alice.connection).toBe('offline')
      await new Promise((r) => setTimeout(r, 500))
      expect(alice.connection).toBe('offline')
      const t0 = Date.now()
      target.dispatchEvent(new Event('online'))
      await until(() => alice.connection === 'online')
      expect(Date.now() - t0).toBeLessThan(500)
    } finally {
      g.addEventListener = saved.add
      g.removeEventListener = saved.remove
      if (saved.nav) Object.defineProperty(globalThis, 'navigator', saved.nav)
      else delete g.navigator
    }
  })
})

describe('reconnect backoff', () => {
  it('backs off exponentially with jitter against a relay that keeps dropping it, capped, never hammering', async () => {
    world = new World()
    // Something that accepts TCP and hangs up at once, like a relay that crashes on every connect.
    const attempts: number[] = []
    const server = createNetServer((socket) => {
      attempts.push(Date.now())
      socket.destroy()
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    const port = (server.address() as { port: number }).port
    try {
      const alice = await createClient({ relay: `ws://127.0.0.1:${port}`, storage: `${world.dir}/alice.db` })
      world.clients.push(alice)
      await new Promise((r) => setTimeout(r, 4000))
      expect(alice.connection).toBe('connecting')
      // Without backoff this would be hundreds of attempts; full jitter under a doubling ceiling
      // (200 ms, 400 ms, … capped at 5 s) gives a handful.
      expect(attempts.length).toBeGreaterThanOrEqual(3)
      expect(attempts.length).toBeLessThan(25)
      const gaps = attempts.slice(1).map((t, i) => t - attempts[i]!)
      expect(Math.max(...gaps)).toBeLessThanOrEqual(5_300)
    } finally {
      server.close()
    }
  }, 15_000)
})

describe('a conversation the relay cannot take for now', () => {
  it('keeps its pending messages pending (too many open on one connection), and they leave once the relay takes it', async () => {
    world = new World()
    let relay = await world.relay()
    const alice = await world.client('alice')
    const bob = await world.client('bob')
    await until(() => alice.connection === 'online' && bob.connection === 'online')
    const one = await alice.createConversation({ title: 'one' })
    const two = await alice.createConversation({ title: 'two' })
    const bobOne = await bob.join(await one.invite())
    const bobTwo = await bob.join(await two.invite())
    await relay.close()
    await until(() => alice.connection !== 'online', 5000, 'alice offline')
    const m1 = await one.send('in one')
    const m2 = await two.send('in two')
    // The relay comes back allowing one open conversation a connection (an operator's setting).
    relay = await world.relay({ limits: { maxRoomsPerConnection: 1 } })
    await until(() => world.errors.get(alice)!.some((e) => e.message.includes('too many rooms')), 10_000, 'alice told')
    expect(world.errors.get(alice)!.filter((e) => e.message.includes('too many rooms')).map((e) => e.code)).toEqual(['refused'])
    expect([one.message(m1.id)!.status, two.message(m2.id)!.status]).not.toContain('failed')
    // Then with the default limits again: both go, with no retry by the app.
    await relay.close()
    await world.relay()
    await until(() => texts(bobOne).includes('in one') && texts(bobTwo).includes('in two'), 30_000, 'both delivered')
    await until(() => [one.message(m1.id)!.status, two.message(m2.id)!.status].every((s) => s !== 'pending'), 10_000, '✓ on both')
  }, 60_000)
})

describe('createClient options', () => {
  it('refuses options it cannot honour as invalid_argument, before touching storage: no `every: 0` turning compaction off, no unknown `open`', async () => {
    const { mkdtempSync, existsSync, rmSync } = await import('node:fs')
    const { tmpdir } = await import('node:os')
    const { join } = await import('node:path')
    const dir = mkdtempSync(join(tmpdir(), 'petrel-options-'))
    try {
      const storage = join(dir, 'device.db')
      const bad: Array<Record<string, unknown>> = [
        { relay: 'http://localhost:1' },
        { relay: '' },
        { compaction: { every: 0 } },
        { compaction: { every: -5 } },
        { compaction: { every: 1.5 } },
        { open: 'fast' },
        { keyRotation: { messages: 0 } },
        { keyRotation: { ms: Number.NaN } },
        { name: 'x'.repeat(1025) },
        { name: 42 },
      ]
      for (const options of bad) {
        await expect(createClient({ relay: 'ws://localhost:1', storage, ...options } as never), JSON.stringify(options)).rejects.toMatchObject({ code: 'invalid_argument' })
      }
      expect(existsSync(storage)).toBe(false)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
