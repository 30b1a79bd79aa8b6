import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { DeviceStore } from '../../src/client/index.js'
import { setFlushWait } from '../../src/client/seal-queue.js'
import { openDeviceStore } from '../../src/client/storage/open-store.js'
import { onDisk, pair, texts, until, World } from './harness.js'


/** A SQLite store on a slow disk (the outside world): every commit takes `ms` longer. */
async function slowDisk(path: string, ms: number): Promise<DeviceStore> {
  const disk = await openDeviceStore({ storage: path })
  return onDisk(disk, async (batch) => {
    await new Promise((r) => setTimeout(r, ms))
    return disk.commit(batch)
  })
}

let world: World
afterEach(async () => {
  setFlushWait()
  await world?.close()
})

describe('a burst of sends', () => {
  it('shares envelopes: 500 sends made together take a few relay rows, and Bob shows each once, in order, by its author', async () => {
    world = new World()
    const relay = await world.relay()
    const { alice, aliceConv, bobConv } = await pair(world)
    const before = (await relay.store.readRows(aliceConv.id, 0, 100_000)).length
    const sent = Array.from({ length: 500 }, (_, i) => `burst ${i}`)
    const messages = await Promise.all(sent.map((t) => aliceConv.send(t)))
    await until(() => bobConv.messages().length >= 500, 20_000, 'bob has the burst')
    expect(texts(bobConv)).toEqual(sent)
    expect(bobConv.messages().every((m) => m.author === alice.userId && m.authorName === 'alice')).toBe(true)
    const rows = (await relay.store.readRows(aliceConv.id, 0, 100_000)).length - before
    expect(rows).toBeGreaterThan(0)
    expect(rows).toBeLessThan(25)
    // Each message keeps its own ticks: delivered once Bob's device has stored them.
    await until(() => messages.every((m) => aliceConv.message(m.id)?.status === 'delivered' || aliceConv.message(m.id)?.status === 'read'), 10_000, 'all delivered')
  })

  it('signs sends made together once: each message names its batch entry and place, Bob holds the entries, a lone send is signed alone', async () => {
    world = new World()
    await world.relay()
    const { alice, aliceConv, bobConv } = await pair(world)
    // More than one batch holds (MERGE_BYTES, ~160 short messages at 320 bytes each besides the text).
    const sent = Array.from({ length: 250 }, (_, i) => `together ${i}`)
    const messages = await Promise.all(sent.map((t) => aliceConv.send(t)))
    const lone = await aliceConv.send('alone')
    await until(() => bobConv.messages().length >= 251, 10_000, 'bob has them')
    const stored = bobConv.doc.getMap<Record<string, unknown>>('messages')
    const entries = bobConv.doc.getMap<{ s: Uint8Array; d: string; h: Uint8Array }>('messageBatches')
    const places = new Map<string, number[]>()
    for (const m of messages) {
      const v = stored.get(m.id)!
      expect(v.s).toBeUndefined()
      expect(typeof v.b).toBe('string')
      const key = `${alice.userId}.${v.b as string}`
      places.set(key, [...(places.get(key) ?? []), v.i as number])
    }
    // A few batches, each as big as an envelope allows; places 0..k-1 in send order.
    expect(places.size).toBeGreaterThan(1)
    expect(places.size).toBeLessThan(20)
    for (const [key, at] of places) {
      expect(at).toEqual(at.map((_, i) => i))
      expect(entries.get(key)!.h.length).toBe(32 * at.length)
      expect(entries.get(key)!.s.length).toBe(64)
    }
    expect(stored.get(lone.id)!.s).toBeInstanceOf(Uint8Array)
    expect(stored.get(lone.id)!.b).toBeUndefined()
    expect(texts(bobConv)).toEqual([...sent, 'alone'])
  })

  it('sends made one at a time while earlier batches are stored wait for them and share a batch', async () => {
    world = new World()
    await world.relay()
    // A slow disk (the outside world): every commit takes 250 ms. A flush waits for the commit
    // before its own at most a few milliseconds; here as long as it takes, so the batches do
    // not depend on how fast this machine turns the event loop. (At 40 ms, twenty turns of a
    // loaded CI machine outlasted one commit, and the sends made a third and fourth batch.)
    const slow = await slowDisk(join(world.dir, 'slow.db'), 250)
    setFlushWait(60_000)
    const alice = await world.client('alice', { storage: slow })
    const bob = await world.client('bob')
    const aliceConv = await alice.createConversation({ title: 'slow disk' })
    const bobConv = await bob.join(await aliceConv.invite())
    const first = aliceConv.send('first')
    // One send per turn (as a UI's taps come), all while 'first' is sealed and stored.
    const later: Array<Promise<{ id: string }>> = []
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setImmediate(r))
      later.push(aliceConv.send(`later ${i}`))
    }
    const sent = await Promise.all(later)
    await first
    const stored = aliceConv.doc.getMap<{ b?: string; i?: number; s?: Uint8Array }>('messages')
    // Not twenty signatures and twenty envelopes. One flush may be sealed while the commit
    // before it is on disk (the pipeline is one deep): the first of them may go at once, alone;
    // the rest wait and share one batch, in send order.
    const batches = new Map<string | undefined, string[]>()
    for (const m of sent) batches.set(stored.get(m.id)!.b, [...(batches.get(stored.get(m.id)!.b) ?? []), m.id])
    expect(batches.size).toBeLessThanOrEqual(2)
    const shared = [...batches.entries()].find(([b]) => b !== undefined)
    expect(shared, 'a batch shared by several sends').toBeDefined()
    expect(shared![1].length).toBeGreaterThanOrEqual(19)
    expect(shared![1].map((id) => stored.get(id)!.i)).toEqual(shared![1].map((_, i) => i))
    await until(() => bobConv.messages().length === 21, 10_000, 'bob has them')
    expect(texts(bobConv)).toEqual(['first', ...Array.from({ length: 20 }, (_, i) => `later ${i}`)])
  })

  it('batches go to the relay while the ones before them are still being written to disk, and send() resolves in order once durable', async () => {
    world = new World()
    await world.relay()
    const alice = await world.client('alice', { storage: await slowDisk(join(world.dir, 'slow.db'), 400) })
    const bob = await world.client('bob')
    const aliceConv = await alice.createConversation({ title: 'slow disk' })
    const bobConv = await bob.join(await aliceConv.invite())
    const settled: string[] = []
    const first = aliceConv.send('first').then(() => settled.push('first'))
    await new Promise((r) => setImmediate(r))
    const second = aliceConv.send('second').then(() => settled.push('second'))
    await new Promise((r) => setTimeout(r, 20))
    const third = aliceConv.send('third').then(() => settled.push('third'))
    // Bob has the second and the third while the first's commit is still on its way to disk:
    // a flush waits a few milliseconds at most for the commit before its own.
    await until(() => texts(bobConv).includes('third'), 5000, 'bob has the third')
    expect(texts(bobConv)).toEqual(['first', 'second', 'third'])
    expect(settled).toEqual([])
    await Promise.all([first, second, third])
    expect(settled).toEqual(['first', 'second', 'third'])
  })

  it("a device sending many batches on a slow disk still shows others' messages at once: acks queue no commits ahead of them", async () => {
    world = new World()
    await world.relay()
    // Every commit takes 200 ms (a slow disk: the outside world). Each of Alice's batches is
    // acknowledged by the relay, and each ack moves her stored cursor: were each write awaited
    // in her incoming chain, twenty acks would hold what Bob sends behind ≥ 4 s of commits.
    const alice = await world.client('alice', { storage: await slowDisk(join(world.dir, 'slow.db'), 200) })
    const bob = await world.client('bob')
    const aliceConv = await alice.createConversation({ title: 'busy' })
    const bobConv = await bob.join(await aliceConv.invite())
    await until(() => bobConv.messages().length === 0 && bob.connection === 'online')
    const sends: Array<Promise<unknown>> = []
    for (let i = 0; i < 20; i++) {
      sends.push(aliceConv.send(`batch ${i}`))
      await new Promise((r) => setTimeout(r, 15))
    }
    await until(() => texts(bobConv).length === 20, 10_000, 'bob has her twenty')
    const started = performance.now()
    await bobConv.send('hi alice')
    await until(() => texts(aliceConv).includes('hi alice'), 10_000, 'alice shows it')
    const ms = performance.now() - started
    // Bob's own commit (his disk is not slow), the relay, Alice applying it: well under 2 s.
    expect(ms).toBeLessThan(2000)
    console.log(`busy sender on a slow disk: Bob's message shown at Alice ${Math.round(ms)} ms after his send`)
    await Promise.all(sends)
    // Her cursor reached the relay all the same (compaction and ✓✓ depend on it).
    await until(() => aliceConv.messages().every((m) => m.status !== 'pending'), 10_000, 'alice has her ✓')
  })

  it('writes messages in the order send() was called, across batches of every size', async () => {
    world = new World()
    await world.relay()
    const { aliceConv } = await pair(world)
    // Long texts fill a batch alone, short ones share: batches of one and of many alternate.
    const sent = Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? `long ${i} ${'x'.repeat(60_000)}` : `short ${i}`))
    const messages = await Promise.all(sent.map((t) => aliceConv.send(t)))
    // The order Yjs wrote them in (one client, rising clocks) is the order the outbox and the
    // relay carry them in.
    const map = aliceConv.doc.getMap('messages') as unknown as { _map: Map<string, { id: { clock: number } }> }
    const clocks = messages.map((m) => map._map.get(m.id)!.id.clock)
    expect(clocks).toEqual([...clocks].sort((a, b) => a - b))
  })

  it('envelopes refused for a new epoch are sealed again together, and every message arrives once', async () => {
    world = new World()
    const relay = await world.relay()
    const { alice, aliceConv, invite } = await pair(world)
    const carol = await world.client('carol')
    const carolConv = await carol.join(invite)
    // Alice too: rotating before she folded Carol's join, her epoch would leave Carol's device
    // without the key, be refused, and be started again (one more record among the rows below).
    await until(() => carolConv.members().length === 3 && aliceConv.members().length === 3, 10_000, 'carol in')
    carol.disconnect()
    await until(() => carol.connection === 'offline')
    const offline = Array.from({ length: 30 }, (_, i) => `carol offline ${i}`)
    await Promise.all(offline.map((t) => carolConv.send(t)))
    await aliceConv.rotateKey()
    const last = await aliceConv.send('after rotation')
    await until(() => aliceConv.message(last.id)?.status !== 'pending', 10_000, 'stored by the relay')
    const rowsBefore = (await relay.store.readRows(aliceConv.id, 0, 100_000)).length
    carol.connect()
    await until(() => offline.every((t) => texts(aliceConv).includes(t)), 15_000, 'carol re-sealed and delivered')
    await new Promise((r) => setTimeout(r, 300))
    for (const t of offline) expect(texts(aliceConv).filter((x) => x === t)).toHaveLength(1)
    // What carol sealed again went out together, as one envelope (per message, it would have
    // been one row each). Usually her stale envelope reached the relay first and was refused
    // (a placeholder row); under load she may fold the new epoch before uploading, and send
    // only the re-sealed one.
    const added = (await relay.store.readRows(aliceConv.id, 0, 100_000)).slice(rowsBefore)
    const envelopes = added.filter((r) => r.structs.length > 64)
    expect(envelopes).toHaveLength(1)
    expect(world.errors.get(alice)!.filter((e) => e.code === 'envelope_rejected')).toEqual([])
  })

  it('sealed offline after a restart, a burst fits the limit the relay last advertised (not the defaults)', async () => {
    world = new World()
    const relay = await world.relay({ limits: { maxEnvelopeBytes: 8192 } })
    const { aliceConv, bobConv } = await pair(world)
    await aliceConv.whenSynced(10_000)
    const alice = world.clients[0]!
    await alice.close()
    await relay.close()
    // Restarted with the relay away: the outbox fills before any hello of this run.
    const again = await world.client('alice-again', { storage: join(world.dir, 'alice.db') })
    const [conv] = await again.conversations()
    const sent = Array.from({ length: 200 }, (_, i) => `offline burst ${i} ${'y'.repeat(60)}`)
    const messages = await Promise.all(sent.map((t) => conv!.send(t)))
    await world.relay({ limits: { maxEnvelopeBytes: 8192 } })
    await until(() => messages.every((m) => conv!.message(m.id)?.status !== 'pending'), 20_000, 'all leave the outbox')
    expect(messages.filter((m) => conv!.message(m.id)?.status === 'failed')).toEqual([])
    await until(() => bobConv.messages().length >= 200, 20_000, 'bob has the burst')
    expect(texts(bobConv)).toEqual(sent)
  })
})

describe("a batch of sends' local commit", () => {
  it('waits for company once its envelope went to the relay, is written at once offline, and send() resolves only once it is stored', async () => {
    world = new World()
    await world.relay()
    const disk = await openDeviceStore({ storage: join(world.dir, 'alice.db') })
    // Each commit that appends an envelope (a batch of sends): the mark it came with, and
    // whether the disk had finished it when its send() resolved.
    const flushes: Array<{ soon: boolean; stored: boolean; texts: string }> = []
    const recording = onDisk(disk, async (batch, options) => {
      const outer = batch.append?.some((op) => op.doc === 'outer') ?? false
      const entry = { soon: options?.soon === true, stored: false, texts: '' }
      if (outer) {
        entry.texts = (batch.append ?? []).map((op) => new TextDecoder().decode(op.bytes)).join(' ')
        flushes.push(entry)
      }
      await disk.commit(batch, options)
      entry.stored = true
    })
    const alice = await world.client('alice', { storage: recording })
    const bob = await world.client('bob')
    await until(() => alice.connection === 'online' && bob.connection === 'online', 10_000, 'clients online')
    const aliceConv = await alice.createConversation({ title: 'commits' })
    const bobConv = await bob.join(await aliceConv.invite())
    await until(() => aliceConv.members().length === 2, 10_000, 'bob joined')

    await aliceConv.send('online one')
    const online = flushes.find((f) => f.texts.includes('online one'))!
    expect(online.soon).toBe(true)
    expect(online.stored).toBe(true)

    alice.disconnect()
    await until(() => alice.connection === 'offline', 10_000, 'alice offline')
    await aliceConv.send('offline one')
    const offline = flushes.find((f) => f.texts.includes('offline one'))!
    // Nothing but this device holds it: no waiting for company.
    expect(offline.soon).toBe(false)
    expect(offline.stored).toBe(true)

    alice.connect()
    await until(() => texts(bobConv).includes('offline one'), 10_000, 'bob has both')
    expect(texts(bobConv)).toEqual(['online one', 'offline one'])
  })
})
