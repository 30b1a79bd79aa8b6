import type { ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterEach, describe, expect, it } from 'vitest'
import { atLeastSent, texts, until, World } from '../integration/harness.js'
import { startRelayProcess } from '../integration/relay-process.js'

const KILLS = Number(process.env.PETREL_CRASH_KILLS ?? 20)
let world: World
let child: ChildProcess | undefined
afterEach(async () => {
  child?.kill('SIGKILL')
  await world?.close()
})

describe('relay crash safety', () => {
  it(`never loses an acknowledged (✓) message across ${KILLS} SIGKILLs mid-traffic, and the database stays intact`, async () => {
    world = new World()
    const db = join(world.dir, 'relay.db')
    // A port of our own: the first relay picks one, later ones reuse it.
    const probe = await world.relay({ database: join(world.dir, 'probe.db') })
    const port = probe.port
    await probe.close()
    world.port = port
    child = await startRelayProcess(port, db)
    const alice = await world.client('alice')
    const bob = await world.client('bob')
    await until(() => alice.connection === 'online' && bob.connection === 'online')
    const a = await alice.createConversation({ title: 'crash' })
    const b = await bob.join(await a.invite())
    let n = 0
    const acked = new Set<string>()
    for (let k = 0; k < KILLS; k++) {
      // Traffic while the relay runs, then a kill at a random moment inside it.
      const burst = 10 + Math.floor(Math.random() * 20)
      const sends: Promise<unknown>[] = []
      for (let i = 0; i < burst; i++) sends.push(a.send(`m${n++}`))
      await new Promise((r) => setTimeout(r, Math.random() * 40))
      for (const m of a.messages()) if (atLeastSent(m.status)) acked.add(m.text)
      child.kill('SIGKILL')
      await new Promise<void>((r) => child!.once('exit', () => r()))
      await Promise.all(sends)
      child = await startRelayProcess(port, db)
    }
    await until(() => a.messages().every((m) => atLeastSent(m.status)), 30_000, 'all sent after the last restart')
    await until(() => texts(b).length === n, 30_000, 'bob has every message')
    // Acked before a kill means stored: Bob has every one of them, each once, in send order.
    const bobTexts = texts(b)
    for (const t of acked) expect(bobTexts).toContain(t)
    expect(new Set(bobTexts).size).toBe(n)
    expect(bobTexts).toEqual(Array.from({ length: n }, (_, i) => `m${i}`))
    child.kill('SIGKILL')
    await new Promise<void>((r) => child!.once('exit', () => r()))
    child = undefined
    const check = new Database(db, { readonly: true })
    expect(check.pragma('integrity_check', { simple: true })).toBe('ok')
    check.close()
    console.log(`relay crash: ${KILLS} SIGKILLs, ${n} messages, ${acked.size} acknowledged before a kill, 0 lost`)
  }, 180_000)
})
