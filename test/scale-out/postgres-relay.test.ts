/**
 * One relay on PostgreSQL (the real server of this machine), where every store call is a round
 * trip: races that SQLite's synchronous calls hide show here.
 */
import { randomBytes } from 'node:crypto'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { pair, texts, until, World } from '../integration/harness.js'
import { dropPostgresSchema, postgresAvailable } from '../unit/services.js'
import { tcpProxy } from './tcp-proxy.js'

const postgres = await postgresAvailable()
const schemas: string[] = []
let world: World | undefined

afterEach(async () => {
  await world?.close()
  world = undefined
})
afterAll(async () => {
  if (postgres.ok) for (const s of schemas) await dropPostgresSchema(postgres.url, s)
})

describe.skipIf(!postgres.ok)(`relay on PostgreSQL${postgres.ok ? '' : ` (skipped: ${postgres.ok ? '' : postgres.reason})`}`, () => {
  it('puts a device that opens a new conversation while its creation commits in the one room: it talks, and can be removed', { timeout: 120_000 }, async () => {
    if (!postgres.ok) return
    // Bob joins the moment Alice created it: his open races her creation's commit. Before, about
    // 3 runs in 8 gave him a Room object of his own; his join waited out its 15 s.
    for (let run = 0; run < 6; run++) {
      const schema = `petrel_pg_${randomBytes(5).toString('hex')}`
      schemas.push(schema)
      world = new World()
      await world.relay({ database: `${postgres.url}?schema=${schema}` })
      // One node on PostgreSQL with no bus: it says it must stay one.
      expect(world.logLines.some((l) => l.includes('PostgreSQL without Redis'))).toBe(true)
      const { bob, aliceConv, bobConv } = await pair(world)
      await aliceConv.send(`hello ${run}`)
      await bobConv.send(`hi ${run}`)
      await until(() => texts(bobConv).includes(`hello ${run}`) && texts(aliceConv).includes(`hi ${run}`), 5_000, `run ${run}: both ways`)
      await aliceConv.removeMember(bob.userId)
      await until(() => world!.errors.get(bob)!.some((e) => /removed|not a member/.test(e.message)), 5_000, `run ${run}: bob removed`)
      expect(aliceConv.memberIds()).not.toContain(bob.userId)
      await world.close()
      world = undefined
    }
  })

  it('goes on when PostgreSQL drops mid-transaction: no crash, and every message reaches the other side once it is back', { timeout: 90_000 }, async () => {
    if (!postgres.ok) return
    const schema = `petrel_pg_${randomBytes(5).toString('hex')}`
    schemas.push(schema)
    const url = new URL(postgres.url)
    const proxy = await tcpProxy(Number(url.port || 5432), url.hostname)
    try {
      url.port = String(proxy.port)
      url.searchParams.set('schema', schema)
      world = new World()
      await world.relay({ database: url.toString() })
      const { aliceConv, bobConv } = await pair(world)
      const sends: Promise<unknown>[] = []
      for (let i = 0; i < 60; i++) {
        // A send that meets the outage may fail at the relay; the device sends it again.
        sends.push(aliceConv.send(`a${i}`), bobConv.send(`b${i}`))
        if (i === 20) proxy.cut()
        if (i === 40) proxy.restore()
        await new Promise((r) => setTimeout(r, 25))
      }
      await Promise.all(sends)
      await until(() => texts(aliceConv).length === 120 && texts(bobConv).length === 120, 30_000, 'all 120 on both')
      expect(texts(aliceConv)).toEqual(texts(bobConv))
    } finally {
      await world?.close()
      world = undefined
      await proxy.close()
    }
  })
})
