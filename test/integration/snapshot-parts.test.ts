/**
 * History snapshots' parts and the devices that do not need them. With `spareSnapshotParts`
 * (the default), a live member that holds the history gets a GC placeholder of each part's row
 * (it said `want-parts 0`), and so does a catch-up until it meets a compacted row (the device
 * said `want-parts 2` first); a device that needs the snapshot gets its parts whole, and a
 * client whose relay did not announce the feature uploads and receives them as before. Off,
 * everyone gets every row whole.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { Conversation } from '../../src/client/index.js'
import { OUTER_LOG } from '../../src/shared/outer-keys.js'
import { RoomMessage, WantParts } from '../../src/shared/room-messages.js'
import { FrameType, RelayFeature, readFrame, withFeaturesQuery, writeFrame } from '../../src/shared/wire.js'
import { FrameProxy } from './frame-proxy.js'
import { rawDevice, texts, until, World } from './harness.js'

let world: World
let proxy: FrameProxy | undefined
afterEach(async () => {
  await world?.close()
  await proxy?.close()
  proxy = undefined
})

const snapshotOf = (conv: Conversation) => (conv as unknown as { writeSnapshot: () => Promise<void> }).writeSnapshot.bind(conv)
const compacted = (w: World) => w.logLines.filter((l) => l.includes('"compacted"')).length
const logKeys = (conv: Conversation) => new Set((conv as unknown as { outer: { getMap(n: string): Map<string, unknown> } }).outer.getMap(OUTER_LOG).keys())

/** `n` messages of random-looking text (snapshots compress; this keeps several parts). */
async function sendMany(conv: Conversation, n: number, prefix: string): Promise<void> {
  const noise = (i: number) => (i * 2654435761).toString(36).repeat(12)
  for (let i = 0; i < n; i += 500) await Promise.all(Array.from({ length: Math.min(500, n - i) }, (_, j) => conv.send(`${prefix} ${i + j} ${noise(i + j)}`)))
}

/** Alice and Bob, neither writing snapshots on their own; optionally both behind `proxy`. */
async function aliceAndBob(viaProxy = false, spareSnapshotParts = true) {
  const relay = await world.relay({ limits: { maxEnvelopeBytes: 20 * 1024 }, spareSnapshotParts })
  const url = viaProxy && proxy ? proxy.url : world.url
  const alice = await world.client('alice', { compaction: false, relay: url })
  const bob = await world.client('bob', { compaction: false, relay: url })
  const aliceConv = await alice.createConversation({ title: 'parts' })
  const bobConv = await bob.join(await aliceConv.invite())
  await bobConv.whenSynced(10_000)
  return { relay, alice, bob, aliceConv, bobConv }
}

describe('snapshot parts', () => {
  it('reach a live member that holds the history as placeholders where the relay spares them, and a new member whole', async () => {
    world = new World()
    const { relay, aliceConv, bobConv } = await aliceAndBob()
    await sendMany(aliceConv, 600, 'before')
    await until(() => bobConv.messages().length === 600, 10_000, 'bob has them')
    const bobBefore = logKeys(bobConv)
    await snapshotOf(aliceConv)()
    const written = [...logKeys(aliceConv)].filter((k) => !bobBefore.has(k))
    // Several parts (small envelopes), each in a row of its own; the record rides in its own row.
    expect(written.length).toBeGreaterThan(2)
    await until(() => relay.metrics.partsSpared === written.length, 10_000, 'every part spared')
    expect(relay.metrics.partBytesSpared).toBeGreaterThan(written.length * 10_000)
    // Bob's outer document took placeholders: none of the parts is in his log.
    expect(written.filter((k) => logKeys(bobConv).has(k))).toEqual([])
    await until(() => compacted(world) > 0, 10_000, 'relay compacted under the snapshot')

    // Placeholders kept his clocks contiguous: he sends and receives as before.
    await bobConv.send('after the snapshot, from bob')
    await aliceConv.send('after the snapshot, from alice')
    await until(() => texts(aliceConv).includes('after the snapshot, from bob') && texts(bobConv).includes('after the snapshot, from alice'), 10_000, 'both ways')

    // A new member's catch-up meets the compacted rows first: it reads the parts whole, though
    // her device asked to be spared them (it lacked no history it knew of).
    const carol = await world.client('carol', { compaction: false })
    const carolConv = await carol.join(await aliceConv.invite())
    await until(() => carolConv.messages().length === 602, 20_000, 'carol has the history')
    expect(texts(carolConv)).toEqual(texts(aliceConv))
    expect(relay.metrics.partsSpared).toBe(written.length)
    expect(written.filter((k) => !logKeys(carolConv).has(k))).toEqual([])
    expect(world.errors.get(carol)).toEqual([])
    expect(world.errors.get(world.clients[1]!)).toEqual([])
  })

  it('go up and come down whole where the relay did not announce the feature', async () => {
    world = new World()
    // An older relay, as far as the devices can tell: its `features` frame never reaches them.
    const marked: number[] = []
    proxy = await FrameProxy.start(
      () => world.url,
      (to, data, send) => {
        const frame = readFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
        if (to === 'device' && frame.type === FrameType.Features) return
        if (to === 'relay' && frame.type === FrameType.Room && (frame.message[0] === RoomMessage.SnapshotPart || frame.message[0] === RoomMessage.WantParts)) marked.push(frame.message[0])
        send()
      },
    )
    const { relay, aliceConv, bobConv } = await aliceAndBob(true)
    await sendMany(aliceConv, 600, 'before')
    await until(() => bobConv.messages().length === 600, 10_000, 'bob has them')
    await snapshotOf(aliceConv)()
    const alices = logKeys(aliceConv)
    await until(() => [...alices].every((k) => logKeys(bobConv).has(k)), 10_000, 'bob has every part')
    expect(marked).toEqual([])
    expect(relay.metrics.partsSpared).toBe(0)
    await until(() => compacted(world) > 0, 10_000, 'relay compacted under the snapshot')
    const carol = await world.client('carol', { compaction: false })
    const carolConv = await carol.join(await aliceConv.invite())
    await until(() => carolConv.messages().length === 600, 20_000, 'carol has the history')
  })

  it('are spared to a member device in its catch-up, which then shows everything written while it was away', async () => {
    world = new World()
    const { relay, bob, aliceConv, bobConv } = await aliceAndBob()
    await sendMany(aliceConv, 100, 'before')
    await until(() => bobConv.messages().length === 100, 10_000, 'bob has them')
    bob.disconnect()
    // Bob's device still holds only the first 100: the relay keeps every row for him (no
    // compaction), and the snapshot's parts come after the rows they cover.
    await sendMany(aliceConv, 500, 'away')
    const aliceBefore = logKeys(aliceConv)
    await snapshotOf(aliceConv)()
    const written = [...logKeys(aliceConv)].filter((k) => !aliceBefore.has(k))
    await aliceConv.send('after the snapshot')
    expect(written.length).toBeGreaterThan(2)
    expect(relay.metrics.partsSpared).toBe(0)
    bob.connect()
    await until(() => bobConv.messages().length === 601, 20_000, 'bob caught up')
    expect(texts(bobConv)).toEqual(texts(aliceConv))
    // Each part came as a placeholder: none is in his log, and he waits for no snapshot.
    const parts = written.length
    expect(relay.metrics.partsSpared).toBe(parts)
    expect(written.filter((k) => logKeys(bobConv).has(k))).toEqual([])
    expect([...aliceBefore].filter((k) => !logKeys(bobConv).has(k))).toEqual([])
    const state = (bobConv as unknown as { missing: { missedThrough: number; stillMissingThrough: number } }).missing
    expect([state.missedThrough, state.stillMissingThrough]).toEqual([0, 0])
    // The next snapshot's parts reach him live as placeholders too, and the relay compacts.
    await snapshotOf(aliceConv)()
    await until(() => relay.metrics.partsSpared > parts, 10_000, 'live parts spared')
    await until(() => compacted(world) > 0, 10_000, 'relay compacted')
    await aliceConv.send('last')
    await until(() => texts(bobConv).at(-1) === 'last', 10_000, 'bob has the last')
    expect(world.errors.get(bob)).toEqual([])
  })

  it('are asked to be spared in a catch-up only of a relay that announced it', async () => {
    world = new World()
    // A relay of the version before, as far as the devices can tell: it announces parts but
    // not catch-up sparing, and would cut off a device that sent want-parts 2.
    const wants: number[] = []
    proxy = await FrameProxy.start(
      () => world.url,
      (to, data, send) => {
        const frame = readFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
        if (to === 'device' && frame.type === FrameType.Features) return send(writeFrame({ type: FrameType.Features, features: RelayFeature.SnapshotParts }))
        if (to === 'relay' && frame.type === FrameType.Room && frame.message[0] === RoomMessage.WantParts) wants.push(frame.message[1]!)
        send()
      },
    )
    const { relay, bob, aliceConv, bobConv } = await aliceAndBob(true)
    await sendMany(aliceConv, 100, 'before')
    await until(() => bobConv.messages().length === 100, 10_000, 'bob has them')
    bob.disconnect()
    await sendMany(aliceConv, 300, 'away')
    await snapshotOf(aliceConv)()
    bob.connect()
    await until(() => bobConv.messages().length === 400, 20_000, 'bob caught up')
    await until(() => wants.filter((w) => w === WantParts.Spare).length >= 3, 10_000, 'each connection declined live parts after its catch-up')
    expect(wants).not.toContain(WantParts.SpareUnlessNeeded)
    // His catch-up brought the parts whole; nothing was spared but live.
    expect(relay.metrics.partsSpared).toBe(0)
    expect(world.errors.get(bob)).toEqual([])
  })

  it('are announced by the relay after hello to clients that ask, and a want-parts other than 0, 1 or 2 cuts the device off', async () => {
    world = new World()
    const { relay, aliceConv, bobConv } = await aliceAndBob()
    const raw = await rawDevice(withFeaturesQuery(world.url))
    expect(raw.frames.map((f) => f.type).slice(0, 2)).toEqual([FrameType.Hello, FrameType.Features])
    const announced = raw.frames.find((f) => f.type === FrameType.Features)
    expect(announced?.type === FrameType.Features && announced.features).toBe(RelayFeature.SnapshotParts | RelayFeature.CatchUpParts)
    raw.ws.close()
    // A client that does not ask (one built before it, which would drop the connection) never gets it.
    const older = await rawDevice(world.url)
    expect(older.frames.map((f) => f.type)).not.toContain(FrameType.Features)
    older.ws.close()
    const ws = (bobConv as unknown as { provider: { ws: { send(b: Uint8Array): void } } }).provider.ws
    ws.send(Uint8Array.of(RoomMessage.WantParts, 3))
    await until(() => relay.metrics.rejectedCount('malformed room message') === 1, 5000, 'bob cut off')
    // He dials again and goes on.
    await aliceConv.send('after the cut')
    await until(() => texts(bobConv).includes('after the cut'), 10_000, 'bob back')
  })

  it.each([
    ['spares parts', true],
    ['sends every row whole', false],
  ])('a message its author uploads as a part is shown by no other device, where the relay %s', async (_, spare) => {
    world = new World()
    const { relay, alice, bob, aliceConv, bobConv } = await aliceAndBob(false, spare)
    await aliceConv.send('first')
    await until(() => texts(bobConv).includes('first'), 10_000, 'bob has it')
    // A dishonest client: its next message goes up marked as a snapshot part.
    const marking = (aliceConv as unknown as { snapshots: { writingPart: { now: boolean } } }).snapshots.writingPart
    marking.now = true
    const m = await aliceConv.send('marked as a part')
    await until(() => aliceConv.message(m.id)?.status !== 'pending', 10_000, 'stored')
    marking.now = false
    // Live Bob got a blank (sparing) or the envelope with its mark, which he refuses; Carol,
    // catching up, gets a blank too (sparing: no compacted row came before it), or reads it
    // with its mark from the store and refuses it.
    await until(() => relay.metrics.partsSpared === (spare ? 1 : 0), 10_000, 'fanned out')
    const carol = await world.client('carol', { compaction: false })
    const carolConv = await carol.join(await aliceConv.invite())
    await carolConv.whenSynced(10_000)
    const refusedPart = (c: typeof alice) => world.errors.get(c)!.some((e) => e.code === 'envelope_rejected' && /snapshot part/.test(e.message))
    if (spare) expect(relay.metrics.partsSpared).toBe(2)
    else await until(() => refusedPart(carol) && refusedPart(bob), 10_000, 'bob and carol refuse it')
    expect(texts(bobConv)).toEqual(['first'])
    expect(texts(carolConv)).toEqual(['first'])
    expect(texts(aliceConv)).toEqual(['first', 'marked as a part'])
  })
})
