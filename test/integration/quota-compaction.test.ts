/**
 * The per-conversation quota across a compaction: the relay re-reads what the store holds
 * after the rewrite, and must keep counting what is still on its way to the store.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import type { Conversation } from '../../src/client/index.js'
import type { RelayStore } from '../../src/relay/store/relay-store.js'
import { openSqliteRelayStore } from '../../src/relay/store/sqlite-store.js'
import { texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

const snapshotOf = (conv: Conversation) => (conv as unknown as { writeSnapshot: (state?: Uint8Array) => Promise<void> }).writeSnapshot.bind(conv)
const compacted = (w: World) => w.logLines.filter((l) => l.includes('"compacted"')).length
const MAX_ROOM = 150_000
const ALLOWANCE = 64 * 1024

/**
 * The SQLite store, with its compaction write taking a while (a large room's rewrite): as on
 * the store's writer thread, appends issued while it runs are written after it.
 */
function slowCompactionStore(path: string) {
  const inner = openSqliteRelayStore(path, { writer: 'thread' })
  let running: Promise<unknown> | undefined
  let release!: () => void
  const state = { compacting: false, release: () => release() }
  const store: RelayStore = {
    ...inner,
    compactRows: async (room, through, keep) => {
      state.compacting = true
      const gate = new Promise<void>((r) => (release = r))
      const job = gate.then(() => inner.compactRows(room, through, keep))
      running = job
      try {
        return await job
      } finally {
        running = undefined
        state.compacting = false
      }
    },
    append: async (batch) => {
      const wait = running
      if (wait) await wait.catch(() => undefined)
      return inner.append(batch)
    },
  }
  return { store, state }
}

describe('quota across a compaction', () => {
  for (const sendDuring of [false, true]) {
    it(`a member ${sendDuring ? 'sending while the relay compacts' : 'sending only after compaction (control)'} stays within maxRoomBytes`, async () => {
      world = new World()
      const { store, state } = slowCompactionStore(join(world.dir, 'relay.db'))
      await world.relay({ database: store, limits: { maxRoomBytes: MAX_ROOM } })
      const alice = await world.client('alice', { compaction: false })
      const bob = await world.client('bob', { compaction: false })
      await until(() => alice.connection === 'online' && bob.connection === 'online', 10_000, 'both online')
      const aliceConv = await alice.createConversation({ title: 'Quota' })
      const bobConv = await bob.join(await aliceConv.invite())
      for (let i = 0; i < 5; i++) await aliceConv.send(`hello ${i}`)
      await until(() => texts(bobConv).length === 5, 10_000, 'bob has them')
      const big = (tag: string) => `${tag} ${'x'.repeat(2000)}`
      void snapshotOf(bobConv)()
      await until(() => state.compacting, 10_000, 'compaction running')
      if (sendDuring) {
        // Hostile Bob: as much as the quota lets through while the rewrite runs.
        await Promise.allSettled(Array.from({ length: 80 }, (_, i) => bobConv.send(big(`during ${i}`))))
        await new Promise((r) => setTimeout(r, 1000))
      }
      state.release()
      await until(() => compacted(world) > 0, 10_000, 'compacted')
      // Then as much as the quota lets through.
      for (let i = 0; i < 80; i++) await bobConv.send(big(`after ${i}`)).catch(() => undefined)
      await new Promise((r) => setTimeout(r, 1500))
      const total = await store.roomBytes(aliceConv.id)
      expect(total).toBeLessThanOrEqual(MAX_ROOM + ALLOWANCE)
    })
  }
})
