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
import * as Y from 'yjs'
import { createClient } from '../src/client/index.js'
import { startProfile } from './common.js'

/** Nobody listens here: the device stays offline. */
const NOWHERE = 'ws://127.0.0.1:9'

export interface ColdOpenResult {
  ms: number
  referenceMs: number
  messages: number
  writeMs: number
  /** Lazy start until the documents are loaded too. */
  loadedMs: number
  /** The default start (`open: 'all'`) until the last 50 show. */
  allMs: number
}

export async function coldOpen(messages: number): Promise<ColdOpenResult> {
  const storageKey = `bench-cold-${Date.now()}`
  const w0 = performance.now()
  const writer = await createClient({ relay: NOWHERE, name: 'writer', storageKey, open: 'lazy' })
  writer.disconnect()
  const conv = await writer.createConversation({ title: 'long' })
  const texts: string[] = []
  for (let i = 0; i < messages; i++) texts.push(`message ${i} ${'x'.repeat(80)}`)
  for (let i = 0; i < messages; i += 1000) await Promise.all(texts.slice(i, i + 1000).map((t) => conv.send(t)))
  await writer.close()
  const writeMs = performance.now() - w0

  const profile = await startProfile('BENCH_COLD_PROF')
  const t0 = performance.now()
  const reader = await createClient({ relay: NOWHERE, name: 'writer', storageKey, open: 'lazy' })
  reader.disconnect()
  const [opened] = await reader.conversations()
  const last = opened!.messages().slice(-50)
  const ms = performance.now() - t0
  await profile?.()
  if (last.length !== 50 || last[49]!.text !== texts[messages - 1]) throw new Error('cold open: wrong last messages')
  await opened!.ready()
  const loadedMs = performance.now() - t0
  if (opened!.messages().length !== messages) throw new Error('cold open: not everything loaded')
  await reader.close()

  const a0 = performance.now()
  const eager = await createClient({ relay: NOWHERE, name: 'writer', storageKey })
  eager.disconnect()
  const [full] = await eager.conversations()
  if (full!.messages().slice(-1)[0]!.text !== texts[messages - 1]) throw new Error('cold open: wrong last message')
  const allMs = performance.now() - a0
  await eager.close()

  const source = new Y.Doc()
  const map = source.getMap('messages')
  source.transact(() => {
    for (let i = 0; i < messages; i++) map.set(`user.${i.toString(36)}`, { t: texts[i]!, at: i, h: i, n: 0, d: 'device' })
  })
  const state = Y.encodeStateAsUpdate(source)
  const r0 = performance.now()
  const fresh = new Y.Doc()
  Y.applyUpdate(fresh, state)
  const all = [...fresh.getMap<{ h: number; t: string }>('messages').values()].sort((a, b) => a.h - b.h).slice(-50)
  const referenceMs = performance.now() - r0
  if (all.length !== 50) throw new Error('reference failed')
  return { ms, referenceMs, messages, writeMs, loadedMs, allMs }
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
