import { connect } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { WebSocket } from 'ws'
import { CloseCode, FrameType, writeFrame } from '../../src/shared/wire.js'
import { pair, texts, until, World, rawDevice } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

describe('abuse limits', () => {
  it('drops frames past the per-connection rate and cuts off a sender that keeps going (4429)', async () => {
    world = new World()
    const relay = await world.relay({ limits: { framesPerSecond: 20, frameBurst: 50 } })
    const dev = await rawDevice(world.url)
    for (let i = 0; i < 200 && dev.closed() === undefined; i++) dev.ws.send(writeFrame({ type: FrameType.Heartbeat }))
    await until(() => dev.closed() !== undefined)
    expect(dev.closed()?.code).toBe(CloseCode.RateLimited)
    expect(relay.metrics.rejectedCount('rate limited')).toBeGreaterThan(0)
  })

  it('answers HTTP 429 to connections past the per-address limit', async () => {
    world = new World()
    const relay = await world.relay({ limits: { maxConnectionsPerIp: 2 } })
    const a = await rawDevice(world.url)
    const b = await rawDevice(world.url)
    const status = await new Promise<number>((resolve) => {
      const ws = new WebSocket(world.url)
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0))
      ws.on('error', () => {})
    })
    expect(status).toBe(429)
    expect(relay.metrics.rejectedCount('too many connections from one address')).toBe(1)
    a.ws.close()
    await until(() => a.closed() !== undefined)
    const c = await rawDevice(world.url)
    c.ws.close()
    b.ws.close()
  })

  it('refuses conversations past the per-device limit', async () => {
    world = new World()
    await world.relay({ limits: { maxRoomsPerConnection: 2 } })
    const alice = await world.client('alice')
    await until(() => alice.connection === 'online')
    const convs = [await alice.createConversation(), await alice.createConversation(), await alice.createConversation()]
    const errors = world.errors.get(alice)!
    await until(() => errors.some((e) => /too many/.test(e.message)), 5000, 'third refused')
    expect(convs.filter((c) => c.synced).length).toBeLessThanOrEqual(2)
  })

  it('refuses envelopes once a conversation holds its byte quota: they fail, nothing else breaks', async () => {
    world = new World()
    await world.relay({ limits: { maxRoomBytes: 6_000 } })
    const { aliceConv, bobConv } = await pair(world)
    const sent = []
    for (let i = 0; i < 20; i++) sent.push(await aliceConv.send(`filler ${i} ${'x'.repeat(200)}`))
    await until(() => aliceConv.messages().some((m) => m.status === 'failed'), 5000, 'quota reached')
    const failed = aliceConv.messages().filter((m) => m.status === 'failed')
    expect(failed[0]!.error).toMatch(/quota exceeded/)
    // Everything the relay did store reached Bob; the refused ones never will.
    const stored = aliceConv.messages().filter((m) => m.status !== 'failed' && m.status !== 'pending').length
    await until(() => texts(bobConv).length >= stored, 5000, 'bob has what was stored')
    expect(texts(bobConv).some((t) => failed.some((f) => f.text === t))).toBe(false)
  })

  it('closes a connection that sends its HTTP headers too slowly (slowloris)', async () => {
    world = new World()
    await world.relay({ limits: { headersTimeoutMs: 500 } })
    const t0 = Date.now()
    const closedAfter = await new Promise<number>((resolve) => {
      const socket = connect(world.port, '127.0.0.1', () => socket.write('GET / HTTP/1.1\r\nHost: x\r\n'))
      socket.on('data', () => {})
      socket.on('close', () => resolve(Date.now() - t0))
      socket.on('error', () => {})
    })
    expect(closedAfter).toBeLessThan(3000)
  })

  it('shuts down at once when a peer it closed never answers the close (ws would wait 30 s)', { timeout: 40_000 }, async () => {
    world = new World()
    const relay = await world.relay({ limits: { authTimeoutMs: 200 } })
    const ws = new WebSocket(world.url)
    ws.on('error', () => {})
    await new Promise((resolve) => ws.once('open', resolve))
    // The peer stops reading: it never sees the relay's close frame, so it never answers it.
    ;(ws as unknown as { _socket: { pause(): void } })._socket.pause()
    await until(() => relay.metrics.connections === 0, 3000, 'closed for not authenticating')
    const t0 = Date.now()
    await relay.close()
    expect(Date.now() - t0).toBeLessThan(3000)
    ws.terminate()
  })

  it('closes an authenticated connection that goes silent (half-open)', async () => {
    world = new World()
    await world.relay({ limits: { heartbeatMs: 100, idleTimeoutMs: 400 } })
    const dev = await rawDevice(world.url)
    await until(() => dev.closed() !== undefined, 3000)
    expect(dev.closed()?.code).toBe(CloseCode.GoingAway)
  })
})
