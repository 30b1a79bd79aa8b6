/**
 * Three relay nodes on one PostgreSQL and one Redis (the real servers of this machine), each
 * its own process so one can be killed with SIGKILL while messages flow.
 */
import type { ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { afterAll, describe, expect, it } from 'vitest'
import { atLeastSent, texts, until, World } from '../integration/harness.js'
import { startRelayOnAnyPort } from '../integration/relay-process.js'
import { dropPostgresSchema, postgresAvailable, REDIS_URL, redisAvailable } from '../unit/services.js'

const postgres = await postgresAvailable()
const redis = await redisAvailable()
const ready = postgres.ok && redis.ok
const why = !postgres.ok ? postgres.reason : !redis.ok ? redis.reason : ''

const schema = `petrel_cluster_${randomBytes(5).toString('hex')}`
const children: ChildProcess[] = []
let world: World | undefined

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL')
  await world?.close()
  if (postgres.ok) await dropPostgresSchema(postgres.url, schema)
})

async function startNode(database: string): Promise<{ proc: ChildProcess; port: number }> {
  const node = await startRelayOnAnyPort(database, ['--redis', REDIS_URL])
  children.push(node.proc)
  return node
}

describe.skipIf(!ready)(`relay cluster on PostgreSQL + Redis${ready ? '' : ` (skipped: ${why})`}`, () => {
  it('keeps every message once, in order, with correct statuses when a node is killed mid-flow', async () => {
    if (!postgres.ok) return
    const database = `${postgres.url}?schema=${schema}`
    const started = [await startNode(database), await startNode(database), await startNode(database)]
    const nodes = started.map((n) => n.proc)
    const ports = started.map((n) => n.port)
    const urls = ports.map((p) => `ws://127.0.0.1:${p}`)
    world = new World()
    // Each client starts on a different node and knows all three.
    const alice = await world.client('alice', { relay: [urls[0]!, urls[1]!, urls[2]!] })
    const bob = await world.client('bob', { relay: [urls[1]!, urls[2]!, urls[0]!] })
    const carol = await world.client('carol', { relay: [urls[2]!, urls[0]!, urls[1]!] })
    await until(() => [alice, bob, carol].every((c) => c.connection === 'online'), 15_000, 'all online')
    const a = await alice.createConversation({ title: 'cluster' })
    const invite = await a.invite()
    const b = await bob.join(invite)
    const c = await carol.join(invite)
    // Kill the busiest node, so its clients must move.
    const connections = await Promise.all(
      ports.map(async (p) => Number(/^petrel_connections (\d+)$/m.exec(await (await fetch(`http://127.0.0.1:${p}/metrics`)).text())?.[1] ?? 0)),
    )
    const victim = connections.indexOf(Math.max(...connections))
    expect(connections[victim]).toBeGreaterThan(0)
    const sends: Promise<unknown>[] = []
    for (let i = 0; i < 150; i++) {
      sends.push(a.send(`a${i}`), b.send(`b${i}`))
      if (i === 50) nodes[victim]!.kill('SIGKILL')
      await new Promise((r) => setTimeout(r, 3))
    }
    await Promise.all(sends)
    await until(() => [a, b, c].every((conv) => texts(conv).length === 300), 60_000, 'everyone has all 300')
    expect(texts(b)).toEqual(texts(a))
    expect(texts(c)).toEqual(texts(a))
    expect(new Set(texts(a)).size).toBe(300)
    for (const [conv, prefix] of [[a, 'a'], [b, 'b']] as const) {
      expect(texts(conv).filter((t) => t.startsWith(prefix))).toEqual(Array.from({ length: 150 }, (_, i) => `${prefix}${i}`))
    }
    await until(() => [a, b].every((conv) => conv.messages().filter((m) => m.mine).every((m) => m.status === 'delivered')), 30_000, 'all delivered')
    expect(a.messages().every((m) => atLeastSent(m.status))).toBe(true)
  }, 120_000)
})
