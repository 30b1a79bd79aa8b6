import { afterEach, describe, expect, it } from 'vitest'
import { InProcessHub } from '../../src/relay/bus/in-process-bus.js'
import { openSqliteRelayStore, type Relay } from '../../src/relay/index.js'
import { type RelayLimits, recordAllowance } from '../../src/relay/limits.js'
import { randomBytes, toBase64Url } from '../../src/shared/crypto/index.js'
import { AdmissionKind, encodeAdmission } from '../../src/shared/records.js'
import { FrameType, writeFrame } from '../../src/shared/wire.js'
import { atLeastSent, rawDevice, rotateUntilRefused, texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

/** Several relay nodes on one store and one bus, as behind a load balancer. */
async function cluster(n: number, limits?: Partial<RelayLimits>) {
  world = new World()
  const hub = new InProcessHub()
  const nodes: Relay[] = []
  for (let i = 0; i < n; i++) {
    world.port = 0
    nodes.push(await world.relay({ database: openSqliteRelayStore(world.dbPath), bus: hub.connect(`n${i}`), node: `n${i}`, limits }))
  }
  const urls = nodes.map((r) => r.url)
  return { hub, nodes, urls }
}

/** Alice on the first node and Bob on the second, in one conversation of Alice's. */
async function pairAcross(urls: string[], title: string) {
  const alice = await world.client('alice', { relay: urls[0]! })
  const bob = await world.client('bob', { relay: urls[1]! })
  await until(() => alice.connection === 'online' && bob.connection === 'online')
  const a = await alice.createConversation({ title })
  const b = await bob.join(await a.invite())
  return { alice, bob, a, b }
}

describe('relay cluster on one store', () => {
  it('delivers between clients connected to different nodes, in one order everywhere', async () => {
    const { nodes, urls } = await cluster(3)
    const alice = await world.client('alice', { relay: urls[0]! })
    const bob = await world.client('bob', { relay: urls[1]! })
    const carol = await world.client('carol', { relay: urls[2]! })
    await until(() => [alice, bob, carol].every((c) => c.connection === 'online'))
    const a = await alice.createConversation({ title: 'spread' })
    const invite = await a.invite()
    const b = await bob.join(invite)
    const c = await carol.join(invite)
    for (let i = 0; i < 20; i++) {
      await a.send(`a${i}`)
      await b.send(`b${i}`)
      await c.send(`c${i}`)
    }
    await until(() => [a, b, c].every((conv) => texts(conv).length === 60), 10_000, 'everyone has 60')
    expect(texts(b)).toEqual(texts(a))
    expect(texts(c)).toEqual(texts(a))
    await until(() => a.messages().filter((m) => m.mine).every((m) => m.status === 'delivered'), 5000, 'delivered across nodes')
    expect(nodes.map((n) => n.metrics.connections)).toEqual([1, 1, 1])
  })

  it('moves clients of a stopped node to the others; every message arrives once, in order', async () => {
    const { nodes, urls } = await cluster(3)
    const alice = await world.client('alice', { relay: urls })
    const bob = await world.client('bob', { relay: urls })
    await until(() => alice.connection === 'online' && bob.connection === 'online')
    const a = await alice.createConversation({ title: 'failover' })
    const b = await bob.join(await a.invite())
    const sends: Promise<unknown>[] = []
    for (let i = 0; i < 100; i++) {
      sends.push(a.send(`m${i}`))
      if (i === 30) await nodes[0]!.close()
      if (i === 60) await nodes[1]!.close()
      await new Promise((r) => setTimeout(r, 2))
    }
    await Promise.all(sends)
    await until(() => texts(b).length === 100, 20_000, 'bob has 100')
    expect(texts(b)).toEqual(Array.from({ length: 100 }, (_, i) => `m${i}`))
    await until(() => a.messages().every((m) => atLeastSent(m.status)), 10_000, 'all sent')
  })

  it('holds a conversation to one quota across nodes: each counts the rows the others stored', async () => {
    const limits = { maxRoomBytes: 8_000 }
    const { urls } = await cluster(2, limits)
    const { a, b } = await pairAcross(urls, 'shared quota')
    const filler = (who: string, i: number) => `${who} ${i} ${'x'.repeat(200)}`
    for (let i = 0; i < 20; i++) {
      await a.send(filler('a', i))
      await until(() => a.messages().at(-1)!.status !== 'pending', 5000, `a ${i} answered`)
      await b.send(filler('b', i))
      await until(() => b.messages().at(-1)!.status !== 'pending', 5000, `b ${i} answered`)
    }
    const stored = (conv: typeof a) => conv.messages().filter((m) => m.mine && m.status !== 'failed').length
    const store = openSqliteRelayStore(world.dbPath)
    try {
      // Each node alone would have let its own device fill the quota: twice the bytes in all.
      expect(await store.roomBytes(a.id)).toBeLessThanOrEqual(limits.maxRoomBytes + 1_000)
    } finally {
      await store.close()
    }
    expect(stored(a) + stored(b)).toBeLessThan(30)
    expect(a.messages().some((m) => m.status === 'failed') && b.messages().some((m) => m.status === 'failed')).toBe(true)
  })

  it('holds a conversation’s records to one allowance across nodes: each counts the others’ records as they are stored', { timeout: 120_000 }, async () => {
    const limits = { maxRoomBytes: 6_000 }
    const { urls } = await cluster(2, limits)
    const { a, b } = await pairAcross(urls, 'q')
    for (let i = 0; i < 20; i++) await a.send(`filler ${i} ${'x'.repeat(200)}`)
    await until(() => a.messages().some((m) => m.status === 'failed'), 5000, 'quota reached')
    await new Promise((r) => setTimeout(r, 1000))
    expect(await rotateUntilRefused(a, b)).toBeGreaterThan(10)
    const store = openSqliteRelayStore(world.dbPath)
    const bound = limits.maxRoomBytes + recordAllowance(limits)
    try {
      await until(() => a.epoch === b.epoch, 5000, 'epochs agree')
      await rotateUntilRefused(b, a)
      const afterN1 = await store.roomBytes(a.id)
      expect(afterN1).toBeLessThanOrEqual(bound + 2_000)
    } finally {
      await store.close()
    }
  })
})

describe('typing from another node', () => {
  it('for a room whose load fails meanwhile is logged, not an unhandled rejection that would end the relay', async () => {
    world = new World()
    const hub = new InProcessHub()
    const disk = openSqliteRelayStore(world.dbPath)
    const room = toBase64Url(randomBytes(16))
    // The database of the outside world fails to read this one room, after a while.
    const store = new Proxy(disk, {
      get(target, prop, receiver) {
        if (prop === 'loadRoom')
          return async (id: string) => {
            if (id !== room) return target.loadRoom(id)
            await new Promise((r) => setTimeout(r, 300))
            throw new Error('database went away')
          }
        const v = Reflect.get(target, prop, receiver)
        return typeof v === 'function' ? v.bind(target) : v
      },
    })
    const unhandled: unknown[] = []
    const note = (err: unknown) => unhandled.push(err)
    process.on('unhandledRejection', note)
    try {
      const relay = await world.relay({ database: store, bus: hub.connect('n1'), node: 'n1' })
      const other = hub.connect('n0')
      const dev = await rawDevice(relay.url)
      // Any device makes the node load a room, member or not.
      dev.ws.send(writeFrame({ type: FrameType.Open, room, admission: encodeAdmission({ kind: AdmissionKind.None }) as never }))
      await new Promise((r) => setTimeout(r, 50))
      await other.publish({ kind: 'awareness', room, node: 'n0', message: Uint8Array.of(1, 2, 3) })
      await until(() => dev.frames.some((f) => f.type === FrameType.Denied), 5000, 'the device denied')
      await new Promise((r) => setTimeout(r, 200))
      expect(unhandled.map(String)).toEqual([])
      expect(world.logLines.some((l) => l.includes('bus message failed'))).toBe(true)
    } finally {
      process.off('unhandledRejection', note)
    }
  })
})
