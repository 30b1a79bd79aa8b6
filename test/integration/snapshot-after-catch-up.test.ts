/**
 * A fresh device whose catch-up ends before the snapshot it needs has fully reached it: a
 * member writes a snapshot's parts a paced step apart, the record with the last, so a device
 * that joins meanwhile reads placeholders for the compacted history and gets the rest of the
 * snapshot live, after it stopped holding for one. And one whose catch-up ends while the
 * snapshot it received whole is still inflating, as a browser inflates (asynchronously). And,
 * on a relay that spares parts to live devices holding the history, one still waiting for a
 * snapshot does not say it holds the history: the next snapshot reaches it whole.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Conversation } from '../../src/client/index.js'
import type { SnapshotAssembly } from '../../src/client/snapshot-assembly.js'
import { randomBytes, toBase64Url } from '../../src/shared/crypto/index.js'
import { RoomMessage } from '../../src/shared/room-messages.js'
import { setInflateGate, setSyncInflate } from '../../src/shared/snapshot-deflate.js'
import { FrameType, readFrame } from '../../src/shared/wire.js'
import { FrameProxy } from './frame-proxy.js'
import { texts, until, World } from './harness.js'

let world: World
let proxy: FrameProxy | undefined
afterEach(async () => {
  await proxy?.close()
  proxy = undefined
  await world?.close()
})

const snapshotOf = (conv: Conversation) => (conv as unknown as { writeSnapshot: (state?: Uint8Array) => Promise<void> }).writeSnapshot.bind(conv)
const compacted = (w: World) => w.logLines.filter((l) => l.includes('"compacted"')).length

/** Whether a frame to a device is rows, the sync step that ends a catch-up, or other. */
function frameKind(data: Buffer): 'rows' | 'synced' | 'other' {
  const frame = readFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
  if (frame.type !== FrameType.Room) return 'other'
  const m = frame.message
  // Sync (0) step 2 (1): y-websocket's provider counts itself synced on it.
  if (m[0] === RoomMessage.Sync && m[1] === 1) return 'synced'
  return m[0] === RoomMessage.Rows ? 'rows' : 'other'
}

/** `n` messages of random text: snapshots compress, and this one must stay larger than a rows message. */
async function sendMany(conv: Conversation, n: number, prefix: string): Promise<void> {
  const noise = () => toBase64Url(randomBytes(90))
  for (let i = 0; i < n; i += 500) await Promise.all(Array.from({ length: Math.min(500, n - i) }, (_, j) => conv.send(`${prefix} ${i + j} ${noise()}`)))
}

/** Alice and Bob with `n` messages, past the key rotation at 1,000, nobody writing snapshots on their own. */
async function history(n: number, relayOptions: Parameters<World['relay']>[0] = {}) {
  world = new World()
  await world.relay(relayOptions)
  const alice = await world.client('alice', { compaction: false })
  const bob = await world.client('bob', { compaction: false })
  await until(() => alice.connection === 'online' && bob.connection === 'online', 10_000, 'both online')
  const aliceConv = await alice.createConversation({ title: 'Long' })
  const bobConv = await bob.join(await aliceConv.invite())
  await sendMany(aliceConv, n, 'history')
  await until(() => bobConv.messages().length === n, 20_000, 'bob has them')
  await until(() => !(aliceConv as unknown as { rotation: { busy: boolean } }).rotation.busy, 10_000, 'no rotation running')
  return { aliceConv, bobConv }
}

/**
 * A proxy that lets a device's catch-up end early: the first rows message passes, the rest
 * wait in `held` until released (`releaseAfterSyncMs`: that long after the catch-up ended; else
 * by the test), and frames after the catch-up ended pass.
 */
async function catchUpEndingEarly(releaseAfterSyncMs?: number) {
  const state = { rowsSeen: 0, rowsHeld: 0, synced: false, held: [] as Array<() => void> }
  proxy = await FrameProxy.start(
    () => world.url,
    (to, data, send) => {
      if (to !== 'device' || state.synced) return send()
      const kind = frameKind(data)
      if (kind === 'synced') {
        state.synced = true
        send()
        if (releaseAfterSyncMs !== undefined)
          setTimeout(() => {
            for (const s of state.held.splice(0)) s()
          }, releaseAfterSyncMs)
        return
      }
      if (kind === 'rows' && state.rowsSeen++ === 0) return send()
      if (state.rowsSeen === 0) return send()
      if (kind === 'rows') state.rowsHeld++
      state.held.push(send)
    },
  )
  return state
}

describe.each([
  ['inflated at once (Node)', true],
  ['inflated asynchronously (as in a browser)', false],
])('a snapshot that reaches a fresh device after its catch-up, %s', (_, sync) => {
  beforeEach(() => setSyncInflate(sync))
  afterEach(() => setSyncInflate(true))

  it('is still taken: the device shows the compacted history and the tail', async () => {
    // Small envelopes: the snapshot is many parts over several rows messages, so the catch-up's
    // first message holds the placeholders and only some parts.
    const { aliceConv } = await history(3000, { limits: { maxEnvelopeBytes: 20 * 1024 } })
    await snapshotOf(aliceConv)()
    await until(() => compacted(world) > 0, 10_000, 'relay compacted')
    await sendMany(aliceConv, 10, 'tail')
    // The network delivers every rows message after the first only once the catch-up ended:
    // what the device sees when it joins between two of a snapshot's paced parts.
    const net = await catchUpEndingEarly(300)
    const carol = await world.client('carol', { relay: proxy!.url })
    const carolConv = await carol.join(await aliceConv.invite())
    await until(() => net.synced, 10_000, 'carol caught up')
    // Placeholders and some parts in the catch-up; more parts, the record and the tail after.
    expect(net.rowsHeld).toBeGreaterThan(0)
    await until(() => carolConv.messages().length === 3010, 20_000, 'carol has every message').catch((e) => {
      console.log('DIAG', carolConv.messages().length, net.rowsSeen, net.rowsHeld, (carolConv as unknown as { missing: { stillMissingThrough: number } }).missing.stillMissingThrough)
      throw e
    })
    expect(texts(carolConv)).toEqual(texts(aliceConv))
    // Inflated (seal version 2) and applied: nothing left waiting for it.
    expect((carolConv as unknown as { assembly: SnapshotAssembly }).assembly.inflating).toBeUndefined()
  }, 60_000)
})

describe('a catch-up that ends while its snapshot still inflates (as in a browser)', () => {
  let open: () => void = () => {}
  beforeEach(() => {
    setSyncInflate(false)
    setInflateGate(new Promise<void>((resolve) => (open = resolve)))
  })
  afterEach(() => {
    open()
    setInflateGate(undefined)
    setSyncInflate(true)
  })

  it('waits for it: join() resolves once it is applied, the tail is never shown before it, and sends go out meanwhile', async () => {
    const { aliceConv } = await history(3000)
    await snapshotOf(aliceConv)()
    await until(() => compacted(world) > 0, 10_000, 'relay compacted')
    await sendMany(aliceConv, 10, 'tail')
    const carol = await world.client('carol')
    let joined = false
    const joining = carol.join(await aliceConv.invite()).then((conv) => {
      joined = true
      return conv
    })
    await until(async () => (await carol.conversations()).length === 1, 10_000, 'carol joining')
    const [carolConv] = await carol.conversations()
    const inside = carolConv as unknown as { assembly: SnapshotAssembly; provider?: { synced: boolean }; missing: { missedThrough: number } }
    // Every part arrived in the catch-up and the snapshot is inflating; then the catch-up ends.
    await until(() => inside.assembly.inflating !== undefined && inside.provider?.synced === true, 10_000, 'caught up while inflating')
    await new Promise((r) => setTimeout(r, 300))
    // Shown before the history, the tail would sit above a gap: it is held until the snapshot is in,
    // and join() (which resolves once the catch-up is applied) waits too.
    expect(carolConv!.messages()).toEqual([])
    expect(inside.missing.missedThrough).toBeGreaterThan(0)
    expect(joined).toBe(false)
    // The device is not stuck meanwhile: its own message is stored and delivered.
    await carolConv!.send('carol, while the history inflates')
    await until(() => texts(aliceConv).includes('carol, while the history inflates'), 10_000, 'alice has carol’s message')
    open()
    expect(await joining).toBe(carolConv)
    // Its messages show as their signatures are checked, a page at a time.
    await until(() => carolConv!.messages().length === 3011, 20_000, 'carol shows every message')
    expect(texts(carolConv!)).toEqual(texts(aliceConv))
    expect(inside.assembly.inflating).toBeUndefined()
    expect(inside.missing.missedThrough).toBe(0)
  }, 60_000)
})

describe('a device still waiting for a snapshot after its catch-up, on a relay that spares parts', () => {
  it('does not decline parts: the next snapshot reaches it whole, and it shows the history', async () => {
    const { aliceConv, bobConv } = await history(3000, { limits: { maxEnvelopeBytes: 20 * 1024 }, spareSnapshotParts: true })
    await snapshotOf(aliceConv)()
    await until(() => compacted(world) > 0, 10_000, 'relay compacted')
    await sendMany(aliceConv, 10, 'tail')
    // Bob, who holds the history, leaves: only Carol could be spared the next snapshot.
    await world.clients[1]!.close()
    void bobConv
    // Carol's catch-up ends with the compacted history's placeholders and without (some of) the
    // snapshot that covers it: everything after the first rows message waits until released.
    const net = await catchUpEndingEarly()
    const { held } = net
    const carol = await world.client('carol', { relay: proxy!.url })
    const carolConv = await carol.join(await aliceConv.invite())
    await until(() => net.synced, 10_000, 'carol caught up')
    expect(held.length).toBeGreaterThan(0)
    const relay = world.relays.at(-1)!
    // Time to decline, had she wanted to; then the next snapshot, written live.
    await new Promise((r) => setTimeout(r, 300))
    // (Bob, live while the first snapshot was written, was spared its parts.)
    const sparedBefore = relay.metrics.partsSpared
    await snapshotOf(aliceConv)()
    for (const release of held.splice(0)) release()
    await until(() => carolConv.messages().length === 3010, 20_000, 'carol has every message')
    expect(texts(carolConv)).toEqual(texts(aliceConv))
    // She never said she held the history while she did not: nothing of the second was spared.
    expect(relay.metrics.partsSpared).toBe(sparedBefore)
  }, 60_000)

  it('still waits for one after a restart: the next snapshot reaches it whole, and it shows the history', async () => {
    const { aliceConv } = await history(3000, { limits: { maxEnvelopeBytes: 20 * 1024 } })
    await snapshotOf(aliceConv)()
    await until(() => compacted(world) > 0, 10_000, 'relay compacted')
    await sendMany(aliceConv, 10, 'tail')
    // Carol's catch-up ends with the compacted history's placeholders; the rest of the snapshot
    // is held, and never reaches this session of hers.
    const net = await catchUpEndingEarly()
    let carol = await world.client('carol', { relay: proxy!.url })
    const carolConv = await carol.join(await aliceConv.invite())
    await until(() => net.synced, 10_000, 'carol caught up')
    const missing = (c: Conversation) => (c as unknown as { missing: { stillMissingThrough: number } }).missing.stillMissingThrough
    await until(() => missing(carolConv) > 0, 10_000, 'carol knows what she misses')
    expect(net.held.length).toBeGreaterThan(0)
    expect(carolConv.messages().length).toBeLessThan(3010)
    await carol.close()
    // Her next start: she still knows what she misses, so she neither asks to be spared parts
    // in the catch-up nor declines them after it. (The parts she gathered before the restart
    // are not kept: the snapshot they began stays incomplete here.) The next snapshot a member
    // writes reaches her whole, and she takes it. Had she forgotten, she would have been
    // spared its parts, and never shown the history.
    carol = await world.client('carol', { relay: proxy!.url })
    const [again] = await carol.conversations()
    await again!.ready()
    expect(missing(again!)).toBe(missing(carolConv))
    await again!.whenSynced(10_000)
    await snapshotOf(aliceConv)()
    await until(() => again!.messages().length === 3010, 20_000, 'carol has every message')
    expect(texts(again!)).toEqual(texts(aliceConv))
    expect(missing(again!)).toBe(0)
    // Taken: the next start waits for nothing.
    await carol.close()
    carol = await world.client('carol', { relay: proxy!.url })
    const [third] = await carol.conversations()
    await third!.ready()
    expect(missing(third!)).toBe(0)
    expect(third!.messages().length).toBe(3010)
  }, 60_000)
})
