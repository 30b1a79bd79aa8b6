/**
 * The phases of benchmark 5 (cold open), free of Node: the Node run (cold-open.ts, on
 * fake-indexeddb) and the Chromium run (browser/cold-open-page.ts, on the browser's own
 * IndexedDB, reloaded between writing and opening) share them.
 */
import * as Y from 'yjs'
import { createClient } from '../src/client/index.js'

/** Nobody listens here: the device stays offline. */
export const NOWHERE = 'ws://127.0.0.1:9'

/** The i-th message of the history. */
export const coldText = (i: number): string => `message ${i} ${'x'.repeat(80)}`

/** Write `messages` messages offline into one conversation of the device at `storageKey`; its outbox holds every one too (the heaviest case). */
export async function writeHistory(messages: number, storageKey: string): Promise<{ writeMs: number }> {
  const w0 = performance.now()
  const writer = await createClient({ relay: NOWHERE, name: 'writer', storageKey, open: 'lazy' })
  writer.disconnect()
  const conv = await writer.createConversation({ title: 'long' })
  for (let i = 0; i < messages; i += 1000) await Promise.all(Array.from({ length: Math.min(1000, messages - i) }, (_, j) => conv.send(coldText(i + j))))
  await writer.close()
  return { writeMs: performance.now() - w0 }
}

export interface OpenTimes {
  /** `open: 'lazy'`, `createClient` until the last 50 are there. */
  ms: number
  /** The same start until the documents are loaded too. */
  loadedMs: number
  /** The default start (`open: 'all'`) until the last 50 are there. */
  allMs: number
}

/** Open the device written by {@link writeHistory}: lazily, then by default. `profile` wraps the lazy open until the last 50. */
export async function openHistory(messages: number, storageKey: string, profile?: () => Promise<(() => Promise<void>) | undefined>): Promise<OpenTimes> {
  const stop = await profile?.()
  const t0 = performance.now()
  const reader = await createClient({ relay: NOWHERE, name: 'writer', storageKey, open: 'lazy' })
  reader.disconnect()
  const [opened] = await reader.conversations()
  const last = opened!.messages().slice(-50)
  const ms = performance.now() - t0
  await stop?.()
  if (last.length !== 50 || last[49]!.text !== coldText(messages - 1)) throw new Error('cold open: wrong last messages')
  await opened!.ready()
  const loadedMs = performance.now() - t0
  if (opened!.messages().length !== messages) throw new Error('cold open: not everything loaded')
  await reader.close()

  const a0 = performance.now()
  const eager = await createClient({ relay: NOWHERE, name: 'writer', storageKey })
  eager.disconnect()
  const [full] = await eager.conversations()
  if (full!.messages().slice(-1)[0]!.text !== coldText(messages - 1)) throw new Error('cold open: wrong last message')
  const allMs = performance.now() - a0
  await eager.close()
  return { ms, loadedMs, allMs }
}

/** The reference: the same messages as one plaintext Yjs document, loaded, and its last 50 read. */
export function plaintextReference(messages: number): { referenceMs: number } {
  const source = new Y.Doc()
  const map = source.getMap('messages')
  source.transact(() => {
    for (let i = 0; i < messages; i++) map.set(`user.${i.toString(36)}`, { t: coldText(i), at: i, h: i, n: 0, d: 'device' })
  })
  const state = Y.encodeStateAsUpdate(source)
  const r0 = performance.now()
  const fresh = new Y.Doc()
  Y.applyUpdate(fresh, state)
  const all = [...fresh.getMap<{ h: number; t: string }>('messages').values()].sort((a, b) => a.h - b.h).slice(-50)
  const referenceMs = performance.now() - r0
  if (all.length !== 50) throw new Error('reference failed')
  return { referenceMs }
}
