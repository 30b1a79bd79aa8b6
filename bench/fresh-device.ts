/**
 * History: a conversation of N messages with compaction on (the relay then holds a snapshot
 * and the tail, not every update); a fresh device of a new member joins and we time from
 * `join` until the last 50 messages are shown. Reference: `Y.applyUpdate` of the same
 * plaintext document state into a fresh document — what a client with no encryption,
 * signatures or storage would do with the same snapshot.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as Y from 'yjs'
import { createClient } from '../src/client/index.js'
import { startProfile, until, untilChanged } from './common.js'
import { startServer } from './server-process.js'

export interface FreshDeviceResult {
  ms: number
  referenceMs: number
  messages: number
}

export async function freshDevice(messages: number): Promise<FreshDeviceResult> {
  const server = await startServer('petrel')
  const dir = mkdtempSync(join(tmpdir(), 'petrel-bench-fresh-'))
  try {
    const alice = await createClient({ relay: server.url, name: 'alice', storage: join(dir, 'alice.db'), compaction: { every: Math.floor(messages / 3) } })
    const conv = await alice.createConversation({ title: 'history' })
    await conv.whenSynced(30_000)
    for (let i = 0; i < messages; i += 500) {
      await Promise.all(Array.from({ length: Math.min(500, messages - i) }, (_, j) => conv.send(`message ${i + j} ${'x'.repeat(80)}`)))
    }
    await until(() => conv.messages().every((m) => m.status !== 'pending'), 120_000, 'alice sent everything')
    // The relay compacts once every member device holds what the snapshot covers.
    await new Promise((r) => setTimeout(r, 1000))
    const invite = await conv.invite()
    const last = conv.messages().slice(-50).map((m) => m.text).join('\n')

    const profile = await startProfile('BENCH_FRESH_PROF')
    const t0 = performance.now()
    const carol = await createClient({ relay: server.url, name: 'carol', storage: join(dir, 'carol.db') })
    const carolConv = await carol.join(invite)
    await untilChanged(carolConv, () => carolConv.lastMessages(50).map((m) => m.text).join('\n') === last, 60_000, 'the last 50 shown')
    const ms = performance.now() - t0
    await profile?.()
    await carol.close()

    const state = Y.encodeStateAsUpdate(conv.doc)
    await alice.close()
    const r0 = performance.now()
    const fresh = new Y.Doc()
    Y.applyUpdate(fresh, state)
    const referenceMs = performance.now() - r0
    if (fresh.getMap('messages').size < messages) throw new Error('reference did not apply')
    return { ms, referenceMs, messages }
  } finally {
    await server.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}
