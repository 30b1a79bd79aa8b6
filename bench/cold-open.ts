/**
 * Benchmark 5, cold open: a conversation of N messages in IndexedDB (fake-indexeddb on Node),
 * from `createClient` until the last 50 messages are shown. The device wrote them offline, so
 * its outbox holds every one too (the heaviest case). Reference: loading the same messages as
 * one plaintext Yjs document and reading the last 50.
 *
 * Benchmark 6, start-up: a device with C conversations (SQLite), from `createClient` until
 * `conversations()` resolves.
 *
 * Both run with `open: 'lazy'` (conversations answer from their stored summaries while their
 * documents load in the background) and report, beside it, the default `open: 'all'` and the
 * time until the lazy start has loaded everything.
 */
import 'fake-indexeddb/auto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createClient } from '../src/client/index.js'
import { NOWHERE, openHistory, type OpenTimes, plaintextReference, writeHistory } from './cold-open-phases.js'
import { startProfile } from './common.js'

export interface ColdOpenResult extends OpenTimes {
  referenceMs: number
  messages: number
  writeMs: number
}

export async function coldOpen(messages: number): Promise<ColdOpenResult> {
  const storageKey = `bench-cold-${Date.now()}`
  const { writeMs } = await writeHistory(messages, storageKey)
  const times = await openHistory(messages, storageKey, () => startProfile('BENCH_COLD_PROF'))
  return { ...times, ...plaintextReference(messages), messages, writeMs }
}

export interface StartupResult {
  ms: number
  conversations: number
  /** Lazy start until every conversation is loaded. */
  loadedMs: number
  /** The default start (`open: 'all'`). */
  allMs: number
}

export async function startup(conversations: number): Promise<StartupResult> {
  const dir = mkdtempSync(join(tmpdir(), 'petrel-bench-startup-'))
  try {
    const storage = join(dir, 'device.db')
    const writer = await createClient({ relay: NOWHERE, name: 'many', storage, open: 'lazy' })
    writer.disconnect()
    for (let i = 0; i < conversations; i++) {
      const conv = await writer.createConversation({ title: `conversation ${i}` })
      await conv.send(`hello ${i}`)
    }
    await writer.close()
    const t0 = performance.now()
    const reader = await createClient({ relay: NOWHERE, name: 'many', storage, open: 'lazy' })
    const list = await reader.conversations()
    const ms = performance.now() - t0
    if (list.length !== conversations) throw new Error(`start-up: ${list.length} conversations`)
    if (list.some((c) => c.title === '' || c.messages().length !== 1)) throw new Error('start-up: a conversation shows nothing')
    await Promise.all(list.map((c) => c.ready()))
    const loadedMs = performance.now() - t0
    await reader.close()
    const a0 = performance.now()
    const eager = await createClient({ relay: NOWHERE, name: 'many', storage })
    if ((await eager.conversations()).length !== conversations) throw new Error('start-up: default open lost some')
    const allMs = performance.now() - a0
    await eager.close()
    return { ms, conversations, loadedMs, allMs }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
