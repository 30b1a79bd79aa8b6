/**
 * Benchmark 4, catch-up: Bob's device is closed while Alice sends N messages; then it starts
 * again (storage on disk, relay in its own process) and we time from `createClient` until all
 * N are shown. Reference: `Y.applyUpdate` of N plaintext updates of the same shape into a
 * fresh document — what a client with no encryption, signatures or storage would do.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as Y from 'yjs'
import { createClient } from '../src/client/index.js'
import { startProfile, until } from './common.js'
import { startServer } from './server-process.js'

export interface CatchupResult {
  ms: number
  referenceMs: number
  messages: number
}

/**
 * `burst`: how many sends Alice makes at once. Sends made together share envelopes (about 60
 * short messages each, `seal-chunks.ts`), so 500 at a time is a device draining its outbox or
 * a busy group; 1 (each send awaited) gives every message an envelope of its own — one
 * signature to check per message, the worst case.
 */
export async function catchup(messages: number, burst = 500): Promise<CatchupResult> {
  const server = await startServer('petrel')
  const dir = mkdtempSync(join(tmpdir(), 'petrel-bench-catchup-'))
  try {
    const alice = await createClient({ relay: server.url, name: 'alice', storage: join(dir, 'alice.db'), keyRotation: { messages: 1e9 } })
    const conv = await alice.createConversation({ title: 'catch-up' })
    await conv.whenSynced(30_000)
    const bobOptions = { relay: server.url, name: 'bob', storage: join(dir, 'bob.db') }
    let bob = await createClient(bobOptions)
    await bob.join(await conv.invite())
    await bob.close()
    const texts: string[] = []
    for (let i = 0; i < messages; i++) texts.push(`message ${i} ${'x'.repeat(80)}`)
    for (let i = 0; i < messages; i += burst) await Promise.all(texts.slice(i, i + burst).map((t) => conv.send(t)))
    await until(() => conv.messages().every((m) => m.status !== 'pending'), 120_000, 'alice sent everything')
    await alice.close()

    const profile = await startProfile('BENCH_CATCHUP_PROF', burst === 1 ? '.one-by-one.cpuprofile' : '')
    const t0 = performance.now()
    bob = await createClient(bobOptions)
    const [bobConv] = await bob.conversations()
    await until(() => bobConv!.messages().length >= messages, 120_000, 'bob shows everything')
    const ms = performance.now() - t0
    await profile?.()
    await bob.close()

    // Reference: the same number of plaintext message updates, applied one by one.
    const source = new Y.Doc()
    const updates: Uint8Array[] = []
    source.on('update', (u: Uint8Array) => updates.push(u))
    const map = source.getMap('messages')
    for (let i = 0; i < messages; i++) map.set(`user.${i.toString(36)}`, { t: texts[i]!, at: Date.now(), h: i, n: 0, d: 'device' })
    const r0 = performance.now()
    const fresh = new Y.Doc()
    for (const u of updates) Y.applyUpdate(fresh, u)
    const referenceMs = performance.now() - r0
    if (fresh.getMap('messages').size !== messages) throw new Error('reference did not apply')
    return { ms, referenceMs, messages }
  } finally {
    await server.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}
