/**
 * The device's local log: every change is appended as a row, and a busy session leaves one
 * row per document behind on close, so the next open reads one row instead of thousands.
 */
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { messageIdFor } from '../../src/client/message-id.js'
import { openSqliteStore } from '../../src/client/storage/sqlite-store.js'
import { decodeMessageSeqs, decodeSentEnvelope, encodeCursor, keyOf } from '../../src/client/conversation-record.js'
import { setNodeSigning } from '../../src/shared/crypto/index.js'
import { pair, texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

/** A client of its own store with no relay to reach, and one conversation. */
async function offlineClient(name: string, title: string) {
  world = new World()
  const storage = join(world.dir, `${name}.db`)
  const client = await world.client(name, { relay: 'ws://127.0.0.1:9', storage })
  client.disconnect()
  const conv = await client.createConversation({ title })
  return { storage, client, conv }
}

describe('local log', () => {
  it('is compacted to one row per document when a busy conversation closes, and nothing is lost', async () => {
    const { storage, client: writer, conv } = await offlineClient('writer', 'busy')
    // Each awaited alone: an inner and an outer row each (sends made together share rows).
    const sent = Array.from({ length: 300 }, (_, i) => `offline ${i}`)
    for (const t of sent) await conv.send(t)
    await writer.close()

    const store = await openSqliteStore(storage)
    expect(await store.loadLog(conv.id, 'inner')).toHaveLength(1)
    expect(await store.loadLog(conv.id, 'outer')).toHaveLength(1)
    await store.close()

    // Everything is there after the restart, still waiting in the outbox in order, and it leaves.
    await world.relay()
    const again = await world.client('writer-again', { storage })
    const [reopened] = await again.conversations()
    expect(texts(reopened!)).toEqual(sent)
    expect(reopened!.messages().every((m) => m.status === 'pending')).toBe(true)
  })

  it('stores every send accepted before close(), though their batches were not yet written', async () => {
    const { storage, client: writer, conv } = await offlineClient('closing', 'closing')
    const sent = Array.from({ length: 400 }, (_, i) => `closing ${i}`)
    // Signed as in a browser (asynchronously): the batches are written one signature at a time.
    setNodeSigning(false)
    let settled: PromiseSettledResult<unknown>[]
    try {
      const sends = sent.map((t) => conv.send(t))
      // Accepted (past send()'s checks), the first batch being signed, the rest waiting.
      await new Promise((r) => setImmediate(r))
      await writer.close()
      settled = await Promise.allSettled(sends)
    } finally {
      setNodeSigning(true)
    }
    expect(settled.filter((r) => r.status === 'rejected')).toEqual([])
    const again = await world.client('closing-again', { relay: 'ws://127.0.0.1:9', storage })
    const [reopened] = await again.conversations()
    expect(texts(reopened!)).toEqual(sent)
  })

  it('keys the outbox rows by the first message of each envelope, so they sort in send order and are appended to the index, not scattered through it', async () => {
    const { storage, client, conv } = await offlineClient('outbox', 'ids')
    const ids: string[] = []
    for (let i = 0; i < 30; i++) ids.push((await conv.send(`one at a time ${i}`)).id)
    // Sends made together share a millisecond: the clock still rises by one per send.
    for (const m of await Promise.all(Array.from({ length: 70 }, (_, i) => conv.send(`together ${i}`)))) ids.push(m.id)
    expect(new Set(ids).size).toBe(100)
    for (const id of ids) expect(id.startsWith(`${client.userId}.`)).toBe(true)
    // Byte order, as SQLite's index compares them (ids are ASCII: code units are bytes).
    expect([...ids].sort()).toEqual(ids)
    await client.close()
    const store = await openSqliteStore(storage)
    const prefix = keyOf.sentPrefix(conv.id)
    const rows = (await store.list(prefix)).map(([key, value]) => ({ key: key.slice(prefix.length), row: decodeSentEnvelope(value) }))
    await store.close()
    // A row per envelope: one per send awaited alone, a few for the 70 sent together.
    expect(rows.length).toBeGreaterThanOrEqual(31)
    expect(rows.length).toBeLessThan(40)
    // In key order, the rows name every message in the order sent.
    expect(rows.flatMap((r) => r.row.msgIds)).toEqual(ids)
    for (const r of rows) expect(r.key.startsWith(`${r.row.msgIds[0]}/`)).toBe(true)
  })

  it('gives message ids that sort by their clock whatever its number of digits, and differ within one millisecond', () => {
    const clocks = [0, 35, 36, 1295, 1296, 1_764_400_000_000, 1_764_400_000_001, 99_999_999_999_999]
    const ids = clocks.map((h) => messageIdFor('u1', h))
    expect([...ids].sort()).toEqual(ids)
    expect(ids[0]).toMatch(/^u1\.000000000[A-Za-z0-9_-]{8}$/)
    expect(new Set(Array.from({ length: 1000 }, () => messageIdFor('u1', 1_764_400_000_000))).size).toBe(1000)
  })

  it('is left alone after a quiet session', async () => {
    const { storage, client, conv } = await offlineClient('quiet', 'quiet')
    await conv.send('one')
    await conv.send('two')
    await client.close()
    const store = await openSqliteStore(storage)
    expect((await store.loadLog(conv.id, 'inner')).length).toBeGreaterThan(1)
    await store.close()
  })

  it('keeps received messages’ relay positions across restarts, one row per batch, and reads the older one-row-per-message form', async () => {
    world = new World()
    await world.relay()
    const storage = join(world.dir, 'reader.db')
    const { aliceConv, invite } = await pair(world)
    const reader = await world.client('reader', { storage })
    const conv = await reader.join(invite)
    const sent = Array.from({ length: 600 }, (_, i) => `burst ${i}`)
    for (let i = 0; i < sent.length; i += 200) await Promise.all(sent.slice(i, i + 200).map((t) => aliceConv.send(t)))
    await until(() => conv.messages().length >= 600, 20_000, 'reader has all')
    await until(() => conv.unreadCount() === 600, 5000, 'all unread')
    await reader.close()

    // Unread counts come from the positions: lost positions would count nothing as unread.
    let store = await openSqliteStore(storage)
    const batches = await store.list(keyOf.messageSeqsPrefix(conv.id))
    expect(batches.length).toBeGreaterThan(0)
    expect(batches.length).toBeLessThan(50)
    expect(await store.list(keyOf.messageSeqPrefix(conv.id))).toEqual([])
    // Rewrite them as an older build stored them: one row per message.
    const positions = new Map<string, number>()
    for (const [, value] of batches) decodeMessageSeqs(value, positions)
    await store.commit({
      put: [
        ...batches.map(([key]) => [key, null] as [string, null]),
        ...[...positions].map(([msgId, seq]) => [keyOf.messageSeq(conv.id, msgId), encodeCursor(seq)] as [string, Uint8Array]),
      ],
    })
    await store.close()

    const again = await world.client('reader-again', { storage })
    const [reopened] = await again.conversations()
    expect(reopened!.unreadCount()).toBe(600)
    await again.close()
    // Read once, then folded into one row of the current form.
    store = await openSqliteStore(storage)
    expect(await store.list(keyOf.messageSeqPrefix(conv.id))).toEqual([])
    expect(await store.list(keyOf.messageSeqsPrefix(conv.id))).toHaveLength(1)
    await store.close()
  })

  it('rebuilds received messages from the stored received updates alone, and an app listening to conv.doc still gets each remote change', async () => {
    world = new World()
    await world.relay()
    const storage = join(world.dir, 'listener.db')
    const { aliceConv, invite } = await pair(world)
    const reader = await world.client('listener', { storage })
    const conv = await reader.join(invite)
    const sent = Array.from({ length: 300 }, (_, i) => `said ${i}`)
    await Promise.all(sent.slice(0, 150).map((t) => aliceConv.send(t)))
    await until(() => conv.messages().length >= 150, 20_000, 'first half')
    // From here on the app listens: Yjs must encode remote updates for it again.
    const heard = new Y.Doc()
    Y.applyUpdate(heard, Y.encodeStateAsUpdate(conv.doc))
    const onUpdate = (update: Uint8Array) => Y.applyUpdate(heard, update)
    conv.doc.on('update', onUpdate)
    await Promise.all(sent.slice(150).map((t) => aliceConv.send(t)))
    await until(() => conv.messages().length >= 300, 20_000, 'second half')
    conv.doc.off('update', onUpdate)
    const said = (doc: Y.Doc) => [...doc.getMap<{ t: string }>('messages').values()].map((m) => m.t).sort()
    expect(said(heard)).toEqual(sent.slice().sort())
    await reader.close()

    // Offline, from the device's log only.
    const again = await world.client('listener-again', { storage, relay: 'ws://127.0.0.1:9' })
    const [reopened] = await again.conversations()
    expect(reopened!.messages().map((m) => m.text)).toEqual(aliceConv.messages().map((m) => m.text))
    expect(reopened!.messages().map((m) => m.text).sort()).toEqual(sent.slice().sort())
  })
})
