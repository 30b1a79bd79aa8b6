import { inflateRawSync } from 'node:zlib'
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { crashHistoryReplicaThread, type HistoryReplica, historyEncoder, openHistoryReplica, seedReplica } from '../../src/client/history-replica.js'

/** A document changed in many small transactions, with every update it made. */
function busyDoc(): { doc: Y.Doc; updates: Uint8Array[] } {
  const doc = new Y.Doc()
  const updates: Uint8Array[] = []
  doc.on('update', (u: Uint8Array) => updates.push(u))
  const messages = doc.getMap<{ t: string; n: number }>('messages')
  for (let i = 0; i < 300; i++) {
    doc.transact(() => {
      messages.set(`m${i}`, { t: `text ${i}`, n: i })
      // Deletions too: the copy must drop what the document dropped.
      if (i % 7 === 0 && i > 0) messages.delete(`m${i - 7}`)
    })
    // A new client id now and then, as a key rotation makes.
    if (i % 100 === 99) doc.clientID = Math.floor(Math.random() * 2 ** 31)
  }
  return { doc, updates }
}

const contentOf = (state: Uint8Array) => {
  const d = new Y.Doc()
  Y.applyUpdate(d, state)
  return d.getMap('messages').toJSON()
}

let opened: Array<{ close(): void }> = []
afterEach(() => {
  for (const r of opened) r.close()
  opened = []
})

describe('history replica', () => {
  it('runs on a thread of its own in Node', () => {
    expect(historyEncoder()).toBe('thread')
  })

  it('encodes what the document holds, though fed out of order and some updates twice', async () => {
    const { doc, updates } = busyDoc()
    const replica = openHistoryReplica()!
    opened.push(replica)
    const shuffled = [...updates].reverse()
    replica.apply(shuffled.slice(0, 100))
    replica.apply(shuffled)
    replica.apply(updates.slice(50, 80))
    const { state, stateVector } = await replica.encode()
    expect(contentOf(state)).toEqual(doc.getMap('messages').toJSON())
    expect(Y.decodeStateVector(stateVector)).toEqual(Y.decodeStateVector(Y.encodeStateVector(doc)))
    // Deleted messages' texts are not in it (Yjs collected them, as in the document).
    expect(new TextDecoder().decode(state)).not.toContain('text 0')
    expect(new TextDecoder().decode(state)).toContain('text 1')
    expect(state.length).toBe(Y.encodeStateAsUpdate(doc).length)
  })

  it("writes Yjs's own bytes of the history, non-ASCII texts and nested values too (its faster string writes)", async () => {
    const doc = new Y.Doc()
    const updates: Uint8Array[] = []
    doc.on('update', (u: Uint8Array) => updates.push(u))
    const messages = doc.getMap<unknown>('messages')
    for (let i = 0; i < 200; i++) {
      doc.transact(() => messages.set(`m${i}`, { t: i % 3 === 0 ? `héllo ${'€'.repeat(i)}` : `text ${i}`, at: 1.5 * i, tags: ['a', { n: i, s: '😀' }], b: new Uint8Array([i & 0xff]) }))
    }
    const replica = openHistoryReplica()!
    opened.push(replica)
    replica.apply(updates)
    const { state } = await replica.encode()
    // What the thread's copy holds, rebuilt here as it builds it (one transaction) and encoded by Yjs.
    const copy = new Y.Doc()
    copy.transact(() => {
      for (const u of updates) Y.applyUpdate(copy, u)
    })
    expect(state).toEqual(Y.encodeStateAsUpdate(copy))
  })

  it('answers encode after encode, deflated or not, as the copy grows (its buffer is reused, never handed away)', async () => {
    const doc = new Y.Doc()
    const updates: Uint8Array[] = []
    doc.on('update', (u: Uint8Array) => updates.push(u))
    const replica = openHistoryReplica()!
    opened.push(replica)
    const messages = doc.getMap<unknown>('messages')
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < 400; i++) messages.set(`r${round}.${i}`, { t: `${'x'.repeat(90)} ${i}` })
      replica.apply(updates.splice(0))
      const { state } = await replica.encode()
      expect(contentOf(state)).toEqual(messages.toJSON())
      const { deflated, length } = await replica.encodeDeflated()
      expect(inflateRawSync(deflated).length).toBe(length)
      expect(contentOf(new Uint8Array(inflateRawSync(deflated)))).toEqual(messages.toJSON())
      const again = await replica.encode()
      expect(again.state).toEqual(state)
    }
  })

  it('deflates the state on its thread: it inflates to exactly what encode gives, several times smaller', async () => {
    const { doc, updates } = busyDoc()
    const replica = openHistoryReplica()!
    opened.push(replica)
    replica.apply(updates)
    const { state } = await replica.encode()
    const { deflated, length, stateVector } = await replica.encodeDeflated()
    expect(length).toBe(state.length)
    expect(new Uint8Array(inflateRawSync(deflated))).toEqual(state)
    expect(deflated.length * 2).toBeLessThan(state.length)
    expect(Y.decodeStateVector(stateVector)).toEqual(Y.decodeStateVector(Y.encodeStateVector(doc)))
  })

  it('keeps copies apart, and takes updates made while an encode is on its way', async () => {
    const a = busyDoc()
    const b = busyDoc()
    const ra = openHistoryReplica()!
    const rb = openHistoryReplica()!
    opened.push(ra, rb)
    ra.apply(a.updates)
    rb.apply(b.updates)
    const first = ra.encode()
    a.doc.getMap('messages').set('late', { t: 'late', n: 1 })
    ra.apply([a.updates[a.updates.length - 1]!])
    expect(contentOf((await first).state)).not.toHaveProperty('late')
    expect(contentOf((await ra.encode()).state)).toHaveProperty('late')
    expect(contentOf((await rb.encode()).state)).toEqual(b.doc.getMap('messages').toJSON())
  })

  it('answers an encode with the failure once it was fed bytes that are not a Yjs update', async () => {
    const { updates } = busyDoc()
    const replica = openHistoryReplica()!
    opened.push(replica)
    replica.apply(updates.slice(0, 10))
    replica.apply([Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3)])
    await expect(replica.encode()).rejects.toThrow()
    await expect(replica.encodeDeflated()).rejects.toThrow()
  })

  it('rejects encodes once its thread stopped; a copy opened after starts a new thread', async () => {
    const { doc, updates } = busyDoc()
    const before = openHistoryReplica()!
    opened.push(before)
    before.apply(updates)
    await crashHistoryReplicaThread()
    await expect(before.encode()).rejects.toThrow(/stopped/)
    const after = openHistoryReplica()!
    opened.push(after)
    after.apply(updates)
    expect(contentOf((await after.encode()).state)).toEqual(doc.getMap('messages').toJSON())
  })

  describe('seeded from what is stored', () => {
    /** The real copy, with the order of what reached it written down. */
    const watched = (copy: HistoryReplica, fed: Uint8Array[][]): HistoryReplica => ({
      apply: (u) => {
        fed.push([...u])
        copy.apply(u)
      },
      encode: () => copy.encode(),
      encodeDeflated: () => copy.encodeDeflated(),
      close: () => copy.close(),
    })

    it('takes the seed first: updates stored before it is read are held, then follow it', async () => {
      const { doc, updates } = busyDoc()
      const fed: Uint8Array[][] = []
      let read!: (rows: Uint8Array[]) => void
      const { copy, seeded } = seedReplica(watched(openHistoryReplica()!, fed), () => new Promise((r) => (read = r)))
      opened.push(copy)
      // Stored while the seed is being read: these build on history the copy does not have yet.
      copy.apply(updates.slice(200, 250))
      copy.apply(updates.slice(250))
      expect(fed).toEqual([])
      // The read sees some of them too (they were stored before it ran).
      read(updates.slice(0, 220))
      await seeded
      expect(fed.map((u) => u.length)).toEqual([220, 100])
      expect(fed[0]![0]).toBe(updates[0])
      copy.apply(updates.slice(299))
      expect(fed).toHaveLength(3)
      const { state, stateVector } = await copy.encode()
      expect(contentOf(state)).toEqual(doc.getMap('messages').toJSON())
      expect(Y.decodeStateVector(stateVector)).toEqual(Y.decodeStateVector(Y.encodeStateVector(doc)))
    })

    it('drops what it held when the seed cannot be read, and says why', async () => {
      const { updates } = busyDoc()
      const fed: Uint8Array[][] = []
      const { copy, seeded } = seedReplica(watched(openHistoryReplica()!, fed), () => Promise.reject(new Error('disk gone')))
      opened.push(copy)
      copy.apply(updates.slice(0, 10))
      await expect(seeded).rejects.toThrow('disk gone')
      copy.apply(updates.slice(10, 20))
      expect(fed).toEqual([])
    })
  })
})
