/**
 * The fan-out bus's contract (fanout-bus.ts): a node that misses messages (a restart, a Redis
 * blip) loses nothing, as `onReconnect` makes it re-read every room it serves: its rows and its
 * membership records. Two relay nodes on one store, one of them on a bus that drops what is
 * published while it is away and then says it is back, as Redis pub/sub does.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { InProcessHub } from '../../src/relay/bus/in-process-bus.js'
import type { BusMessage, FanoutBus } from '../../src/relay/bus/fanout-bus.js'
import { openSqliteRelayStore, type Relay } from '../../src/relay/index.js'
import { texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

/** A bus that can lose its connection (drops what is published meanwhile) and come back, like Redis pub/sub. */
function flakyBus(inner: FanoutBus) {
  let handler: ((m: BusMessage) => void) | undefined
  const reconnects: Array<() => void> = []
  let down = false
  inner.subscribe((m) => {
    if (!down) handler?.(m)
  })
  const bus: FanoutBus = {
    publish: (m) => (down ? Promise.resolve() : inner.publish(m)),
    subscribe: (h) => {
      handler = h
    },
    onReconnect: (h) => {
      reconnects.push(h)
    },
    ready: () => !down,
    close: () => inner.close(),
  }
  return {
    bus,
    drop: () => {
      down = true
    },
    reconnect: () => {
      down = false
      for (const h of reconnects) h()
    },
  }
}

async function twoNodes() {
  world = new World()
  const hub = new InProcessHub()
  const flaky = flakyBus(hub.connect('n1'))
  const nodes: Relay[] = []
  world.port = 0
  nodes.push(await world.relay({ database: openSqliteRelayStore(world.dbPath), bus: hub.connect('n0'), node: 'n0' }))
  world.port = 0
  nodes.push(await world.relay({ database: openSqliteRelayStore(world.dbPath), bus: flaky.bus, node: 'n1' }))
  return { nodes, urls: nodes.map((n) => n.url), flaky }
}

/** Alice on node n0 and Bob on n1 (the one whose bus drops), in one conversation. */
async function aliceOnN0BobOnN1() {
  const { urls, flaky } = await twoNodes()
  const alice = await world.client('alice', { relay: urls[0]! })
  const bob = await world.client('bob', { relay: urls[1]! })
  await until(() => alice.connection === 'online' && bob.connection === 'online')
  const a = await alice.createConversation({ title: 'blip' })
  const b = await bob.join(await a.invite())
  return { flaky, alice, bob, a, b }
}

describe('a relay node back on the bus', () => {
  it('takes the new epoch of a key rotation published while it was away', async () => {
    const { flaky, a, b } = await aliceOnN0BobOnN1()
    await a.send('hello')
    await b.send('hi')
    await until(() => texts(a).includes('hi') && texts(b).includes('hello'), 10_000, 'warm up')

    flaky.drop()
    await a.rotateKey()
    await until(() => a.epoch === 1, 5000, 'alice on epoch 1')
    await new Promise((r) => setTimeout(r, 200))
    flaky.reconnect()

    await until(() => b.epoch === 1, 10_000, 'bob learned epoch 1 (rows re-read by n1)')
    await b.send('after rotation from bob')
    await until(() => texts(a).includes('after rotation from bob'), 10_000, "bob's message after the rotation reaches alice")
    expect(texts(a)).toContain('after rotation from bob')
  })

  for (const blip of [false, true]) it(`stops serving a member removed while it was ${blip ? 'away' : 'on the bus'}`, async () => {
    const { flaky, bob, a, b } = await aliceOnN0BobOnN1()
    await a.send('hello')
    await until(() => texts(b).includes('hello'), 10_000, 'warm up')
    await b.send('while a member')
    await until(() => texts(a).includes('while a member'), 10_000, 'bob heard')

    if (blip) flaky.drop()
    await a.removeMember(bob.userId)
    await new Promise((r) => setTimeout(r, 200))
    if (blip) flaky.reconnect()
    await until(() => world.errors.get(bob)!.some((e) => /removed|not member|not a member/.test(e.message)), 5000, 'bob told by n1 he was removed')
    // n1 takes nothing more from him.
    await b.send('after removal').catch(() => undefined)
    await new Promise((r) => setTimeout(r, 300))
    expect(texts(a)).not.toContain('after removal')
  })
})
