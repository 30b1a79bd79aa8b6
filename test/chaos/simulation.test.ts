/**
 * Seeded simulation: clients in several conversations send at random while going offline and
 * online at random, the relay restarts at random, and a proxy duplicates, delays, reorders
 * frames and cuts connections. At the end every message whose send() resolved is on every
 * member device exactly once, in the same order everywhere, and delivered.
 * CI size: PETREL_SIM_CLIENTS (default 50) × PETREL_SIM_MESSAGES (20) × PETREL_SIM_RESTARTS (5);
 * `npm run soak` runs 1,000 × 100 × 20. The seed is printed; PETREL_SIM_SEED replays it.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { Conversation } from '../../src/client/index.js'
import { texts, until, World } from '../integration/harness.js'
import { ChaosProxy, prng } from './chaos-proxy.js'

const CLIENTS = Number(process.env.PETREL_SIM_CLIENTS ?? 50)
const MESSAGES = Number(process.env.PETREL_SIM_MESSAGES ?? 20)
const RESTARTS = Number(process.env.PETREL_SIM_RESTARTS ?? 5)
const SEED = Number(process.env.PETREL_SIM_SEED ?? Math.floor(Math.random() * 2 ** 31))
const PER_CONVERSATION = 5

let world: World
let proxy: ChaosProxy | undefined
afterEach(async () => {
  await proxy?.close()
  await world?.close()
})

describe('seeded simulation', () => {
  it(`${CLIENTS} clients × ${MESSAGES} messages × ${RESTARTS} relay restarts through a lossy proxy converge (seed ${SEED})`, async () => {
    console.log(`simulation seed ${SEED} (replay with PETREL_SIM_SEED=${SEED})`)
    const random = prng(SEED)
    world = new World()
    await world.relay({ logLevel: 'error', limits: { framesPerSecond: 1e9, frameBurst: 1e9 } })
    proxy = await ChaosProxy.start(() => world.url, SEED ^ 0x5eed, { duplicate: 0.05, delay: 0.1, maxDelayMs: 30, cut: 0.002 })
    const clients: Awaited<ReturnType<World['client']>>[] = []
    for (let i = 0; i < CLIENTS; i++) clients.push(await world.client(`c${i}`, { relay: proxy.url, keyRotation: { messages: 1e9 } }))
    await until(() => clients.every((c) => c.connection === 'online'), 30_000, 'all online')
    // Conversations of PER_CONVERSATION members, created and joined while everything is calm.
    const groups: Conversation[][] = []
    for (let g = 0; g * PER_CONVERSATION < CLIENTS; g++) {
      const members = clients.slice(g * PER_CONVERSATION, (g + 1) * PER_CONVERSATION)
      const first = await members[0]!.createConversation({ title: `g${g}` })
      const invite = await first.invite()
      const convs = [first]
      for (const m of members.slice(1)) convs.push(await m.join(invite))
      groups.push(convs)
    }
    const resolved = new Set<string>()
    const sends: Promise<void>[] = []
    const total = CLIENTS * MESSAGES
    let restarts = 0
    for (let step = 0; step < total; step++) {
      const g = groups[Math.floor(random() * groups.length)]!
      const who = Math.floor(random() * g.length)
      const conv = g[who]!
      const client = clients[groups.indexOf(g) * PER_CONVERSATION + who]!
      const text = `s${step}`
      sends.push(conv.send(text).then(() => void resolved.add(text)))
      const r = random()
      if (r < 0.02) client.disconnect()
      else if (r < 0.06) client.connect()
      if (restarts < RESTARTS && step > 0 && step % Math.floor(total / (RESTARTS + 1)) === 0) {
        restarts++
        await world.relays.at(-1)!.close()
        await new Promise((res) => setTimeout(res, random() * 100))
        await world.relay({ logLevel: 'error', limits: { framesPerSecond: 1e9, frameBurst: 1e9 } })
      }
      if (step % 10 === 0) await new Promise((res) => setTimeout(res, 1))
    }
    await Promise.all(sends)
    for (const c of clients) c.connect()
    // Everyone converges: same messages, once each, same order, every own message delivered.
    for (const g of groups) {
      await until(
        () => {
          const ref = texts(g[0]!)
          return g.every((c) => texts(c).length === ref.length && texts(c).every((t, i) => t === ref[i]))
        },
        Number(process.env.PETREL_SIM_WAIT ?? 120_000),
        `group ${groups.indexOf(g)} converges`,
      ).catch((e) => {
        console.log(
          'DIVERGED',
          g.map((c) => [texts(c).length, c.messages().filter((m) => m.mine).map((m) => m.status).join(',')]),
          clients.map((c) => c.connection),
          [...world.errors.values()].flat().map(String).slice(0, 10),
        )
        throw e
      })
    }
    let delivered = 0
    for (const g of groups) {
      const ref = texts(g[0]!)
      expect(new Set(ref).size).toBe(ref.length)
      for (const c of g) expect(texts(c)).toEqual(ref)
      await until(() => g.every((c) => c.messages().filter((m) => m.mine).every((m) => m.status === 'delivered')), 60_000, 'all delivered').catch((e) => {
        // Seen once in a full local run under load (thirty-third session, seed 1514945445), not
        // in its replays: say which messages stood short of ✓✓, and where each device was.
        console.log(
          'NOT DELIVERED',
          groups.indexOf(g),
          g.map((c) => ({
            short: c
              .messages()
              .filter((m) => m.mine && m.status !== 'delivered')
              .map((m) => `${m.text}:${m.status}`)
              .slice(0, 5),
            synced: c.synced,
            storedCursor: c.storedCursor,
          })),
          clients.map((c) => c.connection),
          [...world.errors.values()].flat().map(String).slice(0, 10),
        )
        throw e
      })
      delivered += ref.length
    }
    const all = new Set(groups.flatMap((g) => texts(g[0]!)))
    for (const t of resolved) expect(all.has(t)).toBe(true)
    console.log(
      `simulation: ${CLIENTS} clients, ${groups.length} conversations, ${resolved.size} sends resolved, ${delivered} delivered, ${restarts} relay restarts; proxy ${JSON.stringify(proxy.stats)}`,
    )
  }, 600_000)
})
