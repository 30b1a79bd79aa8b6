/**
 * One relay on PostgreSQL (the real server of this machine), where every store call is a round
 * trip: races that SQLite's synchronous calls hide show here.
 */
import { randomBytes } from 'node:crypto'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { pair, texts, until, World } from '../integration/harness.js'
import { dropPostgresSchema, postgresAvailable } from '../unit/services.js'

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
})
