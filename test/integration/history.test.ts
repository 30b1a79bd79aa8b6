import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import type { Conversation } from '../../src/client/index.js'
import { createRelay, type Relay } from '../../src/relay/index.js'
import type { RelayStore } from '../../src/relay/store/relay-store.js'
import { openSqliteRelayStore } from '../../src/relay/store/sqlite-store.js'
import { crashHistoryReplicaThread } from '../../src/client/history-replica.js'
import type { SnapshotSource } from '../../src/client/snapshot-source.js'
import { OUTER_LOG, OUTER_RECORDS } from '../../src/shared/outer-keys.js'
import { RecordKind } from '../../src/shared/records.js'
import { RoomMessage } from '../../src/shared/room-messages.js'
import { FrameType, Reason, readFrame } from '../../src/shared/wire.js'
import { FrameProxy } from './frame-proxy.js'
import { texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

const snapshotOf = (conv: Conversation) => (conv as unknown as { writeSnapshot: (state?: Uint8Array) => Promise<void> }).writeSnapshot.bind(conv)
const compacted = (w: World) => w.logLines.filter((l) => l.includes('"compacted"')).length
const sourceOf = (conv: Conversation) => (conv as unknown as { source: SnapshotSource }).source
const encodedOn = (conv: Conversation) => sourceOf(conv).encodedOn

/** Two clients online on a fresh relay, neither writing snapshots of its own. */
async function twoOnline(first: string, second: string) {
  world = new World()
  await world.relay()
  const a = await world.client(first, { compaction: false })
  const b = await world.client(second, { compaction: false })
  await until(() => a.connection === 'online' && b.connection === 'online', 10_000, 'both online')
  return [a, b] as const
}

/** Alice and Bob in a conversation. */
async function aliceAndBob() {
  const [alice, bob] = await twoOnline('alice', 'bob')
  const aliceConv = await alice.createConversation({ title: 'Trust' })
  const bobConv = await bob.join(await aliceConv.invite())
  return { alice, aliceConv, bobConv }
}

/** Alice writes a snapshot every `every` updates, Bob never: both online, in one conversation. */
async function aliceSnapshotsEvery(every: number, title: string) {
  world = new World()
  await world.relay()
  const alice = await world.client('alice', { compaction: { every } })
  const bob = await world.client('bob', { compaction: false })
  await until(() => alice.connection === 'online' && bob.connection === 'online', 10_000, 'both online')
  const aliceConv = await alice.createConversation({ title })
  const bobConv = await bob.join(await aliceConv.invite())
  return { alice, bob, aliceConv, bobConv }
}

/**
 * Bob writes a snapshot of his copy changed by `forge`, the relay compacts under it, and a
 * fresh member, Carol, joins; resolves once Carol was told of messages she does not show.
 */
async function carolAfterForgedSnapshot(aliceConv: Conversation, bobConv: Conversation, forge: (messages: Y.Map<Record<string, unknown>>) => void) {
  const forged = new Y.Doc()
  Y.applyUpdate(forged, Y.encodeStateAsUpdate(bobConv.doc))
  forge(forged.getMap<Record<string, unknown>>('messages'))
  await snapshotOf(bobConv)(Y.encodeStateAsUpdate(forged))
  await until(() => compacted(world) > 0, 10_000, 'relay compacted under the forged snapshot')
  const carol = await world.client('carol')
  const carolConv = await carol.join(await aliceConv.invite())
  await until(() => world.errors.get(carol)!.some((e) => /snapshot/.test(e.message)), 10_000, 'carol told')
  return carolConv
}

/** Bytes the relay stores for a room, and the part of them after `seq`. */
async function relayBytes(relay: Relay, room: string, afterSeq: number): Promise<{ total: number; after: number }> {
  const total = await relay.store.roomBytes(room)
  let after = 0
  for (let from = afterSeq; ; ) {
    const rows = await relay.store.readRows(room, from, 5000)
    if (rows.length === 0) break
    for (const r of rows) after += r.structs.length
    from = rows[rows.length - 1]!.seq
  }
  return { total, after }
}

async function sendMany(conv: Conversation, n: number, prefix: string): Promise<void> {
  for (let i = 0; i < n; i += 500) await Promise.all(Array.from({ length: Math.min(500, n - i) }, (_, j) => conv.send(`${prefix} ${i + j}`)))
}

/** What a device holds back from its list, for a timed-out wait for messages. */
const internals = (c: Conversation) => {
  const x = c as unknown as { held: { size: number }; checks: { unverified: Set<string>; rejected: Set<string> }; missing: { missedThrough: number } }
  return { deferred: x.held.size, unverified: x.checks.unverified.size, rejected: x.checks.rejected.size, missed: x.missing.missedThrough, docSize: c.doc.getMap('messages').size }
}

/** Where a device holds the relay's rows through, and its snapshot state, for a timed-out wait (compaction waits for every device). */
const cursors = (c: Conversation) => {
  const x = c as unknown as {
    cursor: { seq: number; ackedAhead: Set<number>; unresolved: unknown[] }
    acks: { storedSeq: number }
    snapshots: { since: number; writing: boolean; schedule: object }
    membership: { snapshot?: { coversSeq: number } }
    receiptBook: { byDevice: Map<string, { stored: number }> }
  }
  return JSON.stringify({
    cursor: x.cursor.seq,
    durable: x.acks.storedSeq,
    ackedAhead: [...x.cursor.ackedAhead].slice(0, 10),
    unresolved: x.cursor.unresolved.length,
    sinceSnapshot: x.snapshots.since,
    snapshotting: x.snapshots.writing,
    covers: x.membership.snapshot?.coversSeq,
    schedule: x.snapshots.schedule,
    peersStored: [...x.receiptBook.byDevice.values()].map((r) => r.stored),
  })
}

describe('history compaction', () => {
  it('after 10,000 messages the relay keeps about one snapshot plus the tail, and a fresh device shows the last page within a second', async () => {
    world = new World()
    const relay = await world.relay()
    const alice = await world.client('alice', { compaction: { every: 3000 } })
    const bob = await world.client('bob', { compaction: { every: 3000 } })
    await until(() => alice.connection === 'online' && bob.connection === 'online', 10_000, 'both online')
    const aliceConv = await alice.createConversation({ title: 'Long' })
    const bobConv = await bob.join(await aliceConv.invite())
    await sendMany(aliceConv, 5000, 'alice')
    await sendMany(bobConv, 5000, 'bob')
    await until(() => aliceConv.messages().length === 10_000 && bobConv.messages().length === 10_000, 30_000, 'all delivered').catch((e) => {
      const bobTexts = new Set(texts(bobConv))
      console.log('DIAG missing at bob', texts(aliceConv).filter((t) => !bobTexts.has(t)), internals(bobConv), internals(aliceConv))
      console.log('DIAG', aliceConv.messages().length, bobConv.messages().length, [...world.errors.values()].flat().map((x) => x.message).slice(0, 8), world.logLines.filter((l) => /warn|error|compacted/.test(l)).slice(0, 8))
      throw e
    })
    await until(() => compacted(world) >= 1, 20_000, "relay compacted").catch((e) => { console.log('CURSORS', cursors(aliceConv), cursors(bobConv)); console.log(world.logLines.filter((l) => /compact|refus|error|warn/.test(l)).slice(0, 20).join("\n"), [...world.errors.values()].flat().map((e) => e.message).slice(0, 10)); throw e })
    // Encoded on the replica thread, from the copy fed what its writer stored (Alice's, or
    // Bob's when Bob was far behind whenever Alice crossed the mark).
    const writers = [encodedOn(aliceConv), encodedOn(bobConv)].filter((on) => on !== undefined)
    expect(writers.length).toBeGreaterThan(0)
    expect(writers.every((on) => on === 'thread')).toBe(true)
    // Written by Bob, the snapshot's record reaches Alice a moment after the relay compacted.
    const snapshotRecord = () => (aliceConv as unknown as { membership: { snapshot?: { coversSeq: number } } }).membership.snapshot
    await until(() => snapshotRecord() !== undefined, 10_000, 'alice has the snapshot record')
    const through = snapshotRecord()!.coversSeq
    await until(async () => compacted(world) > 0 && (await relayBytes(relay, aliceConv.id, through)).total > 0, 5000, 'relay bytes under the snapshot')
    await new Promise((r) => setTimeout(r, 200))
    const { total, after } = await relayBytes(relay, aliceConv.id, through)
    // `after` is the last snapshot and the live tail: what the relay keeps is at most twice that.
    expect(total).toBeLessThanOrEqual(2 * after)

    const carol = await world.client('carol')
    const started = performance.now()
    const carolConv = await carol.join(await aliceConv.invite())
    const last = aliceConv.messages().slice(-50).map((m) => m.text)
    const carolStood = (e: unknown) => {
      console.log('DIAG carol', carolConv.messages().length, JSON.stringify(internals(carolConv)), cursors(carolConv), cursors(aliceConv), world.logLines.filter((l) => /compact|refus|error|warn/.test(l)).slice(0, 10))
      throw e
    }
    await until(() => texts(carolConv).slice(-50).join('\n') === last.join('\n'), 10_000, 'fresh device shows the last 50').catch(carolStood)
    const ms = performance.now() - started
    // Speed is the benchmark's to report (bench/fresh-device.ts, BENCHMARKS.md); this only
    // catches a fresh device that downloads and applies the whole log again.
    expect(ms).toBeLessThan(10_000)
    await until(() => carolConv.messages().length === 10_000, 20_000, 'fresh device has all history').catch(carolStood)
    expect(texts(carolConv)).toEqual(texts(aliceConv))
    console.log(`history: relay keeps ${total} B (${after} B snapshot + tail); fresh device showed the last 50 in ${Math.round(ms)} ms`)
  }, 120_000)

  it('a fresh device takes the newer snapshot when a second compaction merged rows into an older placeholder', async () => {
    // Compaction makes each run of a client's rows one GC row at the run's smallest seq. Bob
    // writes no records, so his rows before the first snapshot and after it form one run at
    // the second compaction: a placeholder whose seq lies under the first snapshot stands for
    // rows only the second covers. The fault this is about (a fresh device applied the first
    // snapshot, then ignored the second's parts) showed in the 10,000-message case above about
    // once in 20 runs under load, when two devices' snapshots were in flight at once: the
    // first's part landed after the rows the second covered, so the device met it first. Here
    // the two are written one after the other, the first's parts are compacted too, and the
    // case passes also without the fix; the next case makes the failing shape on purpose.
    const { aliceConv, bobConv } = await aliceAndBob()
    await sendMany(bobConv, 600, 'bob')
    await aliceConv.send('alice 0')
    await until(() => texts(aliceConv).length === 601, 10_000, 'alice has the first part')
    await aliceConv.writeSnapshot()
    await until(() => compacted(world) >= 1, 10_000, 'first compaction')
    // Over a megabyte of envelopes after the first snapshot's record: received pages are taken
    // in passes of 1 MiB (MERGE_PAGES_BYTES).
    for (let i = 0; i < 6000; i += 500) await Promise.all(Array.from({ length: 500 }, (_, j) => bobConv.send(`bob later ${i + j} ${'x'.repeat(200)}`)))
    await until(() => texts(aliceConv).length === 6601, 20_000, 'alice has the second part')
    await aliceConv.writeSnapshot()
    await until(() => compacted(world) >= 2, 10_000, 'second compaction')
    expect(world.logLines.filter((l) => l.includes('"compacted"')).at(-1)).toMatch(/"removed":[1-9]/)

    const carol = await world.client('carol', { compaction: false })
    const carolConv = await carol.join(await aliceConv.invite())
    await until(() => texts(carolConv).length === 6601, 10_000, 'carol has all 6,601 messages').catch((e) => {
      const have = new Set(texts(carolConv))
      console.log('carol lacks', texts(aliceConv).filter((t) => !have.has(t)).length, 'of', texts(aliceConv).length)
      throw e
    })
    expect(texts(carolConv)).toEqual(texts(aliceConv))
  })

  it('a fresh device takes the newer snapshot when the older one landed after the rows the newer covers', async () => {
    // The shape of the fault above, made on purpose: Alice's snapshot waits in her outbox
    // (she is offline) while Bob writes on and snapshots in turn, offline too; Alice's parts
    // then land first, after every row Bob's covers, and his last. The second compaction
    // merges Bob's rows under and over Alice's coverage into one placeholder at a seq under
    // it. Carol meets Alice's snapshot first, while it is still the kept record, and applies
    // it; Bob's record comes passes later (its parts are over a megabyte of incompressible
    // text, and received pages are taken in passes of 1 MiB). Before the fix she then
    // ignored Bob's parts and lacked his 6,000 later messages for good.
    world = new World()
    await world.relay()
    const quiet = { compaction: false, keyRotation: { messages: 1e9 } } as const
    const alice = await world.client('alice', quiet)
    const bob = await world.client('bob', quiet)
    await until(() => alice.connection === 'online' && bob.connection === 'online', 10_000, 'both online')
    const aliceConv = await alice.createConversation({ title: 'Two snapshots' })
    const bobConv = await bob.join(await aliceConv.invite())
    await sendMany(bobConv, 600, 'bob')
    await until(() => texts(aliceConv).length === 600, 10_000, 'alice has the first part')
    alice.disconnect()
    await until(() => alice.connection === 'offline', 10_000, 'alice offline')
    await snapshotOf(aliceConv)()

    const noise = () => Buffer.from(crypto.getRandomValues(new Uint8Array(150))).toString('base64')
    const later: string[] = []
    for (let i = 0; i < 6000; i += 500) later.push(...(await Promise.all(Array.from({ length: 500 }, (_, j) => bobConv.send(`bob later ${i + j} ${noise()}`)))).map((m) => m.id))
    await until(() => later.every((id) => bobConv.message(id)?.status !== 'pending'), 20_000, 'the relay has all of Bob’s')
    bob.disconnect()
    await until(() => bob.connection === 'offline', 10_000, 'bob offline')
    await snapshotOf(bobConv)()

    alice.connect()
    await until(() => compacted(world) >= 1, 20_000, 'compacted under Alice’s snapshot')
    bob.connect()
    await until(() => compacted(world) >= 2, 20_000, 'compacted under Bob’s')
    await until(() => texts(aliceConv).length === 6600, 20_000, 'alice has everything')

    const carol = await world.client('carol', { compaction: false })
    const carolConv = await carol.join(await aliceConv.invite())
    await until(() => texts(carolConv).length === 6600, 15_000, 'carol has all 6,600 messages').catch((e) => {
      const have = new Set(texts(carolConv))
      console.log('carol lacks', texts(aliceConv).filter((t) => !have.has(t)).length, 'of', texts(aliceConv).length, internals(carolConv))
      throw e
    })
    expect(texts(carolConv)).toEqual(texts(aliceConv))
  }, 90_000)

  it("a snapshot in which a member altered another member's message is rejected on display", async () => {
    const { alice, aliceConv, bobConv } = await aliceAndBob()
    const original = await aliceConv.send('I owe Bob 5 euros')
    await bobConv.send('noted')
    await until(() => texts(bobConv).includes('I owe Bob 5 euros') && texts(aliceConv).includes('noted'), 10_000, 'both have the exchange')

    // Bob (a member) writes a snapshot in which Alice owes him 500, and a message in Alice's
    // name she never wrote; Carol joins after the relay compacted under it.
    const carolConv = await carolAfterForgedSnapshot(aliceConv, bobConv, (messages) => {
      messages.set(original.id, { ...messages.get(original.id)!, t: 'I owe Bob 500 euros' })
      messages.set(`${alice.userId}.forgedforged`, { ...messages.get(original.id)!, t: 'Bob is always right', h: Date.now() + 1000 })
    })
    await until(() => texts(carolConv).includes('noted'), 10_000, "carol shows Bob's genuine message")
    expect(texts(carolConv)).not.toContain('I owe Bob 500 euros')
    expect(texts(carolConv)).not.toContain('Bob is always right')
    // The people who had the real history keep it.
    expect(texts(aliceConv)).toContain('I owe Bob 5 euros')
    expect(texts(bobConv)).toContain('I owe Bob 5 euros')
  }, 30_000)

  it('a snapshot that alters one message of a batch signed together hides only that message', async () => {
    const { aliceConv, bobConv } = await aliceAndBob()
    const said = ['first', 'I owe Bob 5 euros', 'last']
    const sent = await Promise.all(said.map((t) => aliceConv.send(t)))
    await until(() => said.every((t) => texts(bobConv).includes(t)), 10_000, 'bob has the batch')
    const stored = bobConv.doc.getMap<Record<string, unknown>>('messages')
    expect(new Set(sent.map((m) => stored.get(m.id)!.b)).size).toBe(1)

    const carolConv = await carolAfterForgedSnapshot(aliceConv, bobConv, (messages) => {
      messages.set(sent[1]!.id, { ...messages.get(sent[1]!.id)!, t: 'I owe Bob 500 euros' })
    })
    await until(() => texts(carolConv).includes('last'), 10_000, "carol shows Alice's genuine messages")
    expect(texts(carolConv)).toEqual(['first', 'last'])
  }, 30_000)

  it('a fresh device still takes its history from the snapshot when a later snapshot was refused as stale', async () => {
    const [alice, bob] = await twoOnline('alice', 'bob')
    const aliceConv = await alice.createConversation({ title: 'Stale' })
    const bobConv = await bob.join(await aliceConv.invite())
    await Promise.all(Array.from({ length: 50 }, (_, i) => aliceConv.send(`a${i}`)))
    await Promise.all(Array.from({ length: 50 }, (_, i) => bobConv.send(`b${i}`)))
    await until(() => texts(aliceConv).length === 100 && texts(bobConv).length === 100, 10_000, 'both have 100')
    await snapshotOf(aliceConv)()
    await until(() => compacted(world) > 0, 10_000, 'relay compacted under Alice’s snapshot')
    // Bob, offline, snapshots under the key he knows; Alice has started a new one meanwhile.
    bob.disconnect()
    await until(() => bob.connection === 'offline', 10_000, 'bob offline')
    await aliceConv.rotateKey()
    await snapshotOf(bobConv)()
    await Promise.all(Array.from({ length: 20 }, (_, i) => aliceConv.send(`a-later${i}`)))
    bob.connect()
    await until(() => texts(bobConv).length === 120, 10_000, 'bob back')
    await Promise.all(Array.from({ length: 20 }, (_, i) => bobConv.send(`b-later${i}`)))
    await until(() => texts(aliceConv).length === 140, 10_000, 'alice has all')
    // The relay refused Bob's snapshot and stored blanks for it, past the compacted part.
    expect(world.errors.get(bob)!.map((e) => e.message)).toContain('relay refused: forbidden: record not valid here')
    const carol = await world.client('carol')
    const carolConv = await carol.join(await aliceConv.invite())
    // The blanks looked like more compacted history, and Alice's snapshot too short for it:
    // Carol showed the 40 later messages only.
    await until(() => texts(carolConv).length === 140, 15_000, 'carol has all')
    expect([...texts(carolConv)].sort()).toEqual([...texts(aliceConv)].sort())
  }, 60_000)

  it('with the replica thread gone, a snapshot is encoded on this thread and a fresh device still gets every message', async () => {
    const { alice, aliceConv, bobConv } = await aliceSnapshotsEvery(400, 'Crash')
    // Past half the mark: Alice's copy on the replica thread has started.
    await sendMany(aliceConv, 250, 'first')
    expect(sourceOf(aliceConv).feeding).toBe(true)
    await crashHistoryReplicaThread()
    await sendMany(aliceConv, 250, 'then')
    await until(() => bobConv.messages().length === 500, 10_000, 'bob has them')
    // Alice snapshots when a send of hers crosses the mark and Bob is not far behind; had he
    // been behind then, her next send writes it.
    for (let i = 0; compacted(world) === 0 && i < 50; i++) {
      await aliceConv.send(`nudge ${i}`)
      await new Promise((r) => setTimeout(r, 100))
    }
    await until(() => compacted(world) > 0, 10_000, 'relay compacted')
    expect(encodedOn(aliceConv)).toBe('here')
    expect(world.errors.get(alice)).toEqual([])
    const carol = await world.client('carol')
    const carolConv = await carol.join(await aliceConv.invite())
    await until(() => carolConv.messages().length === aliceConv.messages().length, 10_000, 'carol has every message')
    expect(texts(carolConv)).toEqual(texts(aliceConv))
  })

  for (const on of ['thread', 'here'] as const) {
    it(`a message refused for good stays failed on its author's device across a restart, and is not history: a fresh device does not get it from a snapshot (encoded ${on === 'here' ? 'on this thread' : 'on the replica thread'})`, async () => {
      world = new World()
      const relay = await world.relay()
      const alice = await world.client('alice', { compaction: false })
      const bob = await world.client('bob', { compaction: false })
      await until(() => alice.connection === 'online' && bob.connection === 'online', 10_000, 'both online')
      const aliceConv = await alice.createConversation({ title: 'Refused' })
      const bobConv = await bob.join(await aliceConv.invite())
      await relay.close()
      const big = await aliceConv.send(`too big ${'x'.repeat(40_000)}`)
      // Still room for snapshot parts (16 KB at least), not for that message.
      await world.relay({ limits: { maxEnvelopeBytes: 32 * 1024 } })
      await until(() => aliceConv.message(big.id)?.status === 'failed', 10_000, 'big fails')
      await alice.close()

      // Alice's device again, now writing snapshots: the failed message is still hers, failed.
      const again = await world.client('alice', { compaction: { every: 400 } })
      const [conv] = await again.conversations()
      expect(conv!.message(big.id)).toMatchObject({ status: 'failed', error: expect.stringMatching(/too large/) })
      await sendMany(conv!, 250, 'first')
      if (on === 'here') await crashHistoryReplicaThread()
      await sendMany(conv!, 250, 'then')
      await until(() => bobConv.messages().length === 500, 10_000, 'bob has them')
      for (let i = 0; compacted(world) === 0 && i < 50; i++) {
        await conv!.send(`nudge ${i}`)
        await new Promise((r) => setTimeout(r, 100))
      }
      await until(() => compacted(world) > 0, 10_000, 'relay compacted')
      expect(encodedOn(conv!)).toBe(on)
      expect(conv!.message(big.id)?.status).toBe('failed')

      const carol = await world.client('carol')
      const carolConv = await carol.join(await conv!.invite())
      const delivered = texts(conv!).filter((t) => !t.startsWith('too big'))
      await until(() => carolConv.messages().length === delivered.length, 10_000, 'carol has every delivered message')
      expect(texts(carolConv)).toEqual(delivered)
      expect(carolConv.message(big.id)).toBeUndefined()
      expect(texts(bobConv).some((t) => t.startsWith('too big'))).toBe(false)
    })
  }

  it('a snapshot of many parts is written a part per outer update, its record with the last, and a fresh device gets every message', async () => {
    world = new World()
    await world.relay({ limits: { maxEnvelopeBytes: 20 * 1024 } })
    const alice = await world.client('alice', { compaction: false })
    const bob = await world.client('bob', { compaction: false })
    await until(() => alice.connection === 'online' && bob.connection === 'online', 10_000, 'both online')
    const aliceConv = await alice.createConversation({ title: 'Parts' })
    const bobConv = await bob.join(await aliceConv.invite())
    await sendMany(aliceConv, 1500, 'long history')
    await until(() => bobConv.messages().length === 1500, 10_000, 'bob has them')
    // 1,500 messages crossed the key rotation at 1,000: it finishes first (a key change while
    // the snapshot is sealed gives the snapshot up, as a test below shows).
    await until(() => aliceConv.membershipState.epoch >= 1 && !(aliceConv as unknown as { rotation: { busy: boolean } }).rotation.busy, 10_000, 'the rotation done').catch((err: Error) => {
      // Seen once in a CI rehearsal under load (fifteenth session), not reproduced since: say what stood.
      const inside = aliceConv as unknown as { rotation: { busy: boolean; use: unknown }; snapshots: { busy: boolean } }
      const state = { epoch: aliceConv.membershipState.epoch, rotating: inside.rotation.busy, snapshotting: inside.snapshots.busy, epochUse: inside.rotation.use, errors: world.errors.get(alice)?.map((e) => `${e.code}: ${e.message}`) }
      throw new Error(`${err.message}; ${JSON.stringify(state)}`)
    })
    // Each outer update the snapshot makes: how many envelopes it holds, and whether a record.
    const updates: Array<{ envelopes: number; records: number }> = []
    const outer = (aliceConv as unknown as { outer: Y.Doc }).outer
    const log: unknown = outer.getMap(OUTER_LOG)
    const records: unknown = outer.getMap(OUTER_RECORDS)
    const onUpdate = (_u: Uint8Array, _o: unknown, _d: unknown, tr: Y.Transaction) => {
      let envelopes = 0
      let recs = 0
      for (const [type, keys] of tr.changed) {
        if (type === log) envelopes += keys.size
        if (type === records) recs += keys.size
      }
      updates.push({ envelopes, records: recs })
    }
    outer.on('update', onUpdate)
    await snapshotOf(aliceConv)()
    outer.off('update', onUpdate)
    const parts = updates.filter((u) => u.envelopes > 0 || u.records > 0)
    expect(parts.length).toBeGreaterThan(3)
    expect(parts.every((u) => u.envelopes === 1)).toBe(true)
    expect(parts.map((u) => u.records)).toEqual([...parts.slice(1).map(() => 0), 1])
    await until(() => compacted(world) > 0, 10_000, 'relay compacted')
    const carol = await world.client('carol')
    const carolConv = await carol.join(await aliceConv.invite())
    await until(() => carolConv.messages().length === 1500, 10_000, 'carol has every message')
    expect(texts(carolConv)).toEqual(texts(aliceConv))
  })

  it('a snapshot being written does not hold up sends made meanwhile', async () => {
    const { aliceConv, bobConv } = await aliceAndBob()
    await sendMany(aliceConv, 500, 'before')
    await until(() => bobConv.messages().length === 500, 10_000, 'bob has them')
    const order: string[] = []
    const snapshot = snapshotOf(aliceConv)().then(() => order.push('snapshot stored'))
    const sent = aliceConv.send('during the snapshot').then(() => order.push('send stored'))
    await Promise.all([snapshot, sent])
    // It held the send queue while it sealed, stored and folded its record: the send came after.
    expect(order).toEqual(['send stored', 'snapshot stored'])
    await until(() => texts(bobConv).includes('during the snapshot'), 10_000, 'bob has the send')
  })

  it('a key change while a snapshot is sealed gives the snapshot up quietly (the relay would refuse it as stale)', async () => {
    const { alice, aliceConv, bobConv } = await aliceAndBob()
    await sendMany(aliceConv, 500, 'before')
    await until(() => bobConv.messages().length === 500, 10_000, 'bob has them')
    // Signing the snapshot's record is held back until the rotation's record is written: the
    // interleaving two busy devices hit by chance (the relay refused such snapshots as stale).
    const ctx = (aliceConv as unknown as { ctx: { signRecord: (kind: number, body: Uint8Array) => Promise<Uint8Array> } }).ctx
    const sign = ctx.signRecord.bind(ctx)
    let rotated: Promise<void> | undefined
    ctx.signRecord = async (kind, body) => {
      if (kind === RecordKind.Snapshot && !rotated) {
        rotated = aliceConv.rotateKey()
        await rotated
      }
      return sign(kind, body)
    }
    await snapshotOf(aliceConv)()
    expect(aliceConv.epoch).toBe(1)
    await aliceConv.send('after the rotation')
    await until(() => texts(bobConv).includes('after the rotation'), 10_000, 'bob reads on')
    expect(compacted(world)).toBe(0)
    expect(world.errors.get(alice)).toEqual([])
  })

  it('a scheduled snapshot given up for a key change is written again without another send', async () => {
    const { alice, aliceConv, bobConv } = await aliceSnapshotsEvery(300, 'Quiet after a burst')
    // The scheduled snapshot's record waits until the burst is over, then a rotation lands
    // in it: it is given up when no send is left to try again.
    const ctx = (aliceConv as unknown as { ctx: { signRecord: (kind: number, body: Uint8Array) => Promise<Uint8Array> } }).ctx
    const sign = ctx.signRecord.bind(ctx)
    let burstOver!: () => void
    const over = new Promise<void>((r) => (burstOver = r))
    let rotated: Promise<void> | undefined
    ctx.signRecord = async (kind, body) => {
      if (kind === RecordKind.Snapshot && !rotated) {
        await over
        rotated = aliceConv.rotateKey()
        await rotated
      }
      return sign(kind, body)
    }
    await sendMany(aliceConv, 400, 'burst')
    await until(() => bobConv.messages().length === 400, 10_000, 'bob has the burst')
    await aliceConv.send('the last for a while')
    burstOver()
    await until(() => rotated !== undefined, 10_000, 'a snapshot began and the key rotated in it')
    await until(() => compacted(world) >= 1, 15_000, 'the relay compacted under a snapshot written again')
    expect(aliceConv.epoch).toBe(1)
    expect(world.errors.get(alice)).toEqual([])
  })

  it('a snapshot that waited for a member offline during the burst is written once their device catches up', async () => {
    const { alice, bob, aliceConv, bobConv: bobFirst } = await aliceSnapshotsEvery(50, 'Back later')
    const convId = bobFirst.id
    await bob.close()
    // Past the mark while Bob's device holds none of it (a row each: sent one at a time), so a
    // snapshot now would only cost him a download.
    for (let i = 0; i < 80; i++) await aliceConv.send(`while bob was away ${i}`)
    await until(() => aliceConv.messages().every((m) => m.status !== 'pending'), 10_000, 'the relay has them')
    await new Promise((r) => setTimeout(r, 300))
    expect(compacted(world)).toBe(0)
    const bobAgain = await world.client('bob', { compaction: false })
    const bobConv = (await bobAgain.conversations()).find((c) => c.id === convId)!
    await until(() => bobConv.messages().length === 80, 10_000, 'bob caught up')
    // No send since: Bob's receipts alone bring it about.
    await until(() => compacted(world) >= 1, 15_000, 'the relay compacted under the snapshot that waited')
    expect(world.errors.get(alice)).toEqual([])
  })

  it('is not written while the document holds changes back for their predecessors: those would be covered and left out', async () => {
    world = new World()
    await world.relay()
    const { aliceConv, bobConv } = await aliceAndBob()
    await aliceConv.send('first')
    await until(() => texts(bobConv).includes('first'), 10_000, 'bob has it')
    // Two changes of one client; Bob's document gets the second alone, as it gets a message
    // sent after one that was refused as stale and comes again in a later row.
    const source = new Y.Doc()
    source.clientID = 424242
    const updates: Uint8Array[] = []
    source.on('update', (u: Uint8Array) => updates.push(u))
    source.getMap('app').set('a', 1)
    source.getMap('app').set('b', 2)
    Y.applyUpdate(bobConv.doc, updates[1]!)
    expect(bobConv.doc.store.pendingStructs).not.toBeNull()
    const snapshot = () => (bobConv as unknown as { membership: { snapshot?: unknown } }).membership.snapshot
    await snapshotOf(bobConv)()
    expect(snapshot()).toBeUndefined()
    // Its predecessor comes: nothing is held back, and the snapshot is written.
    Y.applyUpdate(bobConv.doc, updates[0]!)
    expect(bobConv.doc.store.pendingStructs).toBeNull()
    await snapshotOf(bobConv)()
    expect(snapshot()).toBeDefined()
  })

  it('closing while a snapshot is written neither hangs nor loses a message', async () => {
    const { alice, aliceConv } = await aliceAndBob()
    await sendMany(aliceConv, 500, 'before')
    const snapshot = snapshotOf(aliceConv)().then(
      () => 'stored',
      (err: { code?: string }) => err.code,
    )
    await alice.close()
    // Stored before the store closed, or given up as closed while it was sealed: nothing else.
    expect(['stored', 'closed']).toContain(await snapshot)
    expect(world.errors.get(alice)!.filter((e) => /snapshot/.test(e.message))).toEqual([])
    const again = await world.client('alice-again', { storage: `${world.dir}/alice.db`, compaction: false })
    const [reopened] = await again.conversations()
    expect(texts(reopened!).filter((t) => t.startsWith('before'))).toHaveLength(500)
  })

  it("a snapshot tells a 'from-join' member nothing said before they joined, also on a device they link later", async () => {
    const { aliceConv, dave, daveConv } = await daveJoinedFromJoinThenCompacted()
    const payload = await dave.linkDevice()
    const { createClient } = await import('../../src/client/index.js')
    const laptop = await createClient({ relay: world.url, storage: `${world.dir}/dave-laptop.db`, link: payload })
    world.clients.push(laptop)
    const laptopConv = await until(async () => (await laptop.conversations())[0], 15_000, 'laptop has the conversation')
    await aliceConv.send('later message')
    await until(() => texts(laptopConv).includes('later message'), 10_000, 'laptop reads what follows')
    // Time for a snapshot it could open to be verified and shown.
    await new Promise((r) => setTimeout(r, 500))
    expect(texts(laptopConv)).not.toContain('said before dave came')
    expect(texts(daveConv)).not.toContain('said before dave came')
  }, 30_000)

  it("a device linked while a member was offline reads what that member wrote offline, though it cannot read the compacted history before", async () => {
    const { alice, aliceConv, dave, daveConv } = await daveJoinedFromJoinThenCompacted()
    // Alice does not hear of the new device before she writes: her change continues the Yjs
    // client of 'welcome dave', which the laptop only has inside the snapshot it cannot open.
    alice.disconnect()
    const payload = await dave.linkDevice()
    const { createClient } = await import('../../src/client/index.js')
    const laptop = await createClient({ relay: world.url, storage: `${world.dir}/dave-laptop.db`, link: payload })
    world.clients.push(laptop)
    const laptopConv = await until(async () => (await laptop.conversations())[0], 15_000, 'laptop has the conversation')
    await until(() => laptopConv.synced, 10_000, 'laptop caught up')
    await aliceConv.send('written offline')
    alice.connect()
    await until(() => texts(laptopConv).includes('written offline'), 10_000, 'laptop reads what alice wrote offline')
    await aliceConv.send('written online')
    await until(() => texts(laptopConv).includes('written online') && texts(daveConv).includes('written online'), 10_000, 'both read what follows')
    expect(texts(daveConv)).toEqual(['welcome dave', 'written offline', 'written online'])
    expect(texts(laptopConv)).toEqual(['written offline', 'written online'])
    // And after a restart, from what the laptop stored.
    await laptop.close()
    const again = await createClient({ relay: world.url, storage: `${world.dir}/dave-laptop.db` })
    world.clients.push(again)
    expect(texts((await again.conversations())[0]!)).toEqual(['written offline', 'written online'])
  }, 30_000)
  it("a member removed and let back in 'from-join' never reads what was said while they were out: not on their device, nor from a snapshot on one they link later", async () => {
    const [alice, bob] = await twoOnline('alice', 'bob')
    const aliceConv = await alice.createConversation({ title: 'T' })
    const bobConv = await bob.join(await aliceConv.invite())
    await aliceConv.send('before removal')
    await until(() => texts(bobConv).includes('before removal'))
    await aliceConv.removeMember(bob.userId)
    await until(() => aliceConv.epoch >= 1, 10_000, 'rotated')
    await aliceConv.send('said while bob was out')
    await until(() => aliceConv.messages().at(-1)?.status === 'sent', 5000, 'stored')
    // Back 'from-join': he keeps the first epoch's key from before and gets the new one.
    const back = await bob.join(await aliceConv.invite({ history: 'from-join' }))
    await until(() => back.synced && back.keys().has(back.epoch), 10_000, 'bob back with the new key')
    expect(back.keys().has(0)).toBe(true)
    await aliceConv.send('after bob is back')
    await until(() => texts(back).includes('after bob is back'), 10_000, 'bob reads what follows')
    // A snapshot sealed under the first and the current keys alone opened for him.
    await snapshotOf(aliceConv)()
    await until(() => compacted(world) >= 1, 10_000, 'compacted')
    const payload = await bob.linkDevice()
    const { createClient } = await import('../../src/client/index.js')
    const laptop = await createClient({ relay: world.url, storage: `${world.dir}/bob-laptop.db`, link: payload })
    world.clients.push(laptop)
    const laptopConv = await until(async () => (await laptop.conversations())[0], 15_000, 'laptop has the conversation')
    await aliceConv.send('after the laptop came')
    await until(() => texts(laptopConv).includes('after the laptop came'), 15_000, 'laptop reads what follows')
    await new Promise((r) => setTimeout(r, 500))
    expect(texts(laptopConv)).not.toContain('said while bob was out')
    expect(texts(back)).not.toContain('said while bob was out')
    expect(texts(back)).toEqual(['before removal', 'after bob is back', 'after the laptop came'])
  }, 40_000)
})

/**
 * Alice says something, adds Dave 'from-join', welcomes him, and snapshots; the relay compacts.
 * The snapshot is sealed under an epoch Dave holds, but its content needs the first epoch's key.
 */
async function daveJoinedFromJoinThenCompacted() {
  const [alice, dave] = await twoOnline('alice', 'dave')
  const aliceConv = await alice.createConversation({ title: 'Before Dave' })
  await aliceConv.send('said before dave came')
  const daveConv = await dave.join(await aliceConv.invite({ history: 'from-join' }))
  // Once the relay has the epoch Dave can read (his join may have beaten it there, and then
  // Alice starts it again): sent before, under the first key, it would be held on his device.
  await until(() => daveConv.membershipState.epoch >= 1, 10_000, 'dave has his epoch')
  await aliceConv.send('welcome dave')
  await until(() => texts(daveConv).includes('welcome dave'), 10_000, 'dave has his welcome')
  await snapshotOf(aliceConv)()
  await until(() => compacted(world) > 0, 10_000, 'relay compacted')
  return { alice, aliceConv, dave, daveConv }
}

describe('ticks of history that came from a snapshot', () => {
  it('show on a device linked after the compaction as on the device that sent them: read', async () => {
    const [alice, bob] = await twoOnline('alice', 'bob')
    const aliceConv = await alice.createConversation({ title: 'T' })
    const bobConv = await bob.join(await aliceConv.invite())
    for (let i = 0; i < 10; i++) await aliceConv.send(`a${i}`)
    await until(() => texts(bobConv).length === 10, 10_000, 'bob has them')
    await bobConv.markRead()
    await until(() => aliceConv.messages().every((m) => m.status === 'read'), 10_000, 'read on alice')
    await snapshotOf(aliceConv)()
    await until(() => compacted(world) >= 1, 10_000, 'compacted')
    const payload = await alice.linkDevice()
    const { createClient } = await import('../../src/client/index.js')
    const laptop = await createClient({ relay: world.url, storage: `${world.dir}/alice-laptop.db`, link: payload, compaction: false })
    world.clients.push(laptop)
    const laptopConv = await until(async () => (await laptop.conversations())[0], 15_000, 'laptop has the conversation')
    await until(() => texts(laptopConv).length === 10, 15_000, 'laptop has the history')
    // A message's place is at most what the snapshot covers, not the later row that completed it.
    await until(() => laptopConv.messages().every((m) => m.status === 'read'), 10_000, 'read on the laptop too')
    expect(laptopConv.messages().map((m) => `${m.text}:${m.status}`)).toEqual(aliceConv.messages().map((m) => `${m.text}:${m.status}`))
  }, 40_000)
})

describe('a relay with a small envelope limit', () => {
  async function historyThenSnapshot(maxEnvelopeBytes: number, texts_: (i: number) => string) {
    world = new World()
    await world.relay({ limits: { maxEnvelopeBytes } })
    const alice = await world.client('alice', { compaction: false })
    const bob = await world.client('bob', { compaction: false })
    await until(() => alice.connection === 'online' && bob.connection === 'online', 10_000, 'online')
    const aliceConv = await alice.createConversation({ title: 'T' })
    const bobConv = await bob.join(await aliceConv.invite())
    for (let i = 0; i < 120; i++) await aliceConv.send(texts_(i))
    await until(() => texts(bobConv).length === 120, 10_000, 'bob has all')
    await snapshotOf(aliceConv)()
    await new Promise((r) => setTimeout(r, 1500))
    const carol = await world.client('carol', { compaction: false })
    const carolConv = await carol.join(await aliceConv.invite())
    await until(() => texts(carolConv).length === 120, 10_000, 'carol has the history').catch(() => undefined)
    return { aliceConv, carolConv }
  }
  const noise = () => Buffer.from(crypto.getRandomValues(new Uint8Array(150))).toString('base64')

  it('takes snapshot parts cut to its limit (16 KiB), compacts, and a new member gets the whole history', async () => {
    const { aliceConv, carolConv } = await historyThenSnapshot(16 * 1024, (i) => `m${i} ${noise()}`)
    expect(compacted(world)).toBeGreaterThan(0)
    expect(texts(carolConv)).toEqual(texts(aliceConv))
  })

  it('refuses the record of a snapshot whose parts it refused in earlier updates, and compacts nothing', async () => {
    // 1,100 bytes: messages fit (76 bytes of text), the smallest part (1 KiB, sealed) does not.
    const { aliceConv, carolConv } = await historyThenSnapshot(1100, (i) => `m${i} ${noise().slice(0, 60)}`)
    expect(world.relays[0]!.metrics.rejectedCount('envelope too large')).toBeGreaterThan(0)
    expect(compacted(world)).toBe(0)
    expect(texts(carolConv)).toEqual(texts(aliceConv))
  })
})

describe('a device closed while its catch-up waits for the snapshot', () => {
  let proxy: FrameProxy | undefined
  const realFetch = globalThis.fetch
  afterEach(async () => {
    globalThis.fetch = realFetch
    await proxy?.close()
    proxy = undefined
  })

  it('gets the compacted history, and what followed it, after a restart', async () => {
    world = new World()
    await world.relay({ limits: { maxEnvelopeBytes: 20 * 1024 } })
    const alice = await world.client('alice', { compaction: false })
    const bob = await world.client('bob', { compaction: false })
    await until(() => alice.connection === 'online' && bob.connection === 'online', 10_000, 'online')
    const aliceConv = await alice.createConversation({ title: 'Long' })
    const bobConv = await bob.join(await aliceConv.invite())
    // Random text: the snapshot must not deflate into one part.
    const noise = () => Buffer.from(crypto.getRandomValues(new Uint8Array(90))).toString('base64url')
    for (let i = 0; i < 3000; i += 500) await Promise.all(Array.from({ length: 500 }, (_, j) => aliceConv.send(`history ${i + j} ${noise()}`)))
    await until(() => bobConv.messages().length === 3000, 20_000, 'bob has them')
    await new Promise((r) => setTimeout(r, 500))
    await snapshotOf(aliceConv)()
    await until(() => compacted(world) > 0, 10_000, 'relay compacted')
    for (let i = 0; i < 10; i++) await aliceConv.send(`tail ${i}`)
    // The laptop's network: its first rows message (compacted rows among them) passes, no
    // room message after it does.
    let rowsSeen = 0
    proxy = await FrameProxy.start(
      () => world.url,
      (to, data, send) => {
        if (to !== 'device') return send()
        const f = readFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
        if (f.type === FrameType.Room && f.message[0] === RoomMessage.Rows && rowsSeen++ === 0) return send()
        if (f.type === FrameType.Room && rowsSeen > 0) return
        send()
      },
    )
    // The link mailbox is plain HTTP on the relay: the proxy speaks only WebSocket.
    const proxyHost = new URL(proxy.url).host
    const relayHost = new URL(world.url).host
    globalThis.fetch = ((input: RequestInfo | URL, init?: RequestInit) => realFetch(String(input).replace(proxyHost, relayHost), init)) as typeof fetch
    const payload = await alice.linkDevice()
    const { createClient } = await import('../../src/client/index.js')
    const file = `${world.dir}/laptop.db`
    const laptop = await createClient({ relay: proxy.url, storage: file, link: payload, compaction: false })
    const first = await until(async () => (await laptop.conversations())[0], 15_000, 'laptop has the conversation')
    const missing = (c: Conversation) => (c as unknown as { missing: { holding: boolean } }).missing
    await until(() => missing(first).holding, 15_000, 'laptop met the compacted rows')
    await new Promise((r) => setTimeout(r, 500))
    await laptop.close()
    // Back on a good network: it knows its history is not whole, takes the snapshot, shows all.
    const again = await createClient({ relay: world.url, storage: file, compaction: false })
    world.clients.push(again)
    const [conv] = await again.conversations()
    await until(() => conv!.messages().length === 3010, 15_000, 'laptop shows every message')
    expect(texts(conv!)).toEqual(texts(aliceConv))
  }, 60_000)
})

describe("a 'from-join' invite whose new epoch reaches the relay after the member joined", () => {
  let proxy: FrameProxy | undefined
  afterEach(async () => {
    await proxy?.close()
    proxy = undefined
  })

  it('is started again for the members as they are: the new member reads what follows, and nothing loops', async () => {
    world = new World()
    const relay = await world.relay()
    // Alice's uploads can be held back, as a slow network would.
    let holding = false
    const held: Array<() => void> = []
    proxy = await FrameProxy.start(
      () => world.url,
      (to, _data, send) => {
        if (to === 'relay' && holding) held.push(send)
        else send()
      },
    )
    const alice = await world.client('alice', { compaction: false, relay: proxy.url })
    const dave = await world.client('dave', { compaction: false })
    const aliceConv = await alice.createConversation({ title: 'Before Dave' })
    await aliceConv.send('said before dave came')
    await aliceConv.whenSynced(10_000)
    await until(() => aliceConv.message(aliceConv.messages()[0]!.id)?.status !== 'pending', 10_000, 'stored')
    // The invite's new epoch (and the invite) wait on Alice's side; Dave's join carries the
    // invite to the relay first, so the epoch, arriving after, leaves his device without its key.
    holding = true
    const invite = await aliceConv.invite({ history: 'from-join' })
    const daveConv = await dave.join(invite)
    holding = false
    for (const release of held.splice(0)) release()
    await until(() => relay.metrics.rejectedCount('record refused') >= 1, 10_000, 'the late epoch refused')
    // Alice starts it again, wrapped for Dave's device too: the relay takes it, and Dave folds it.
    // (What she sends before it lands goes under the old key, which Dave cannot read: a window
    // left open, PROTOCOL §5.3.)
    await until(() => daveConv.membershipState.epoch >= 1, 10_000, 'the epoch started again')
    await aliceConv.send('welcome dave')
    await until(() => texts(daveConv).includes('welcome dave'), 10_000, 'dave reads what follows')
    expect(texts(daveConv)).toEqual(['welcome dave'])
    // Sealed again only once there was a new key: a refusal per try, not a loop (it made
    // thousands of stale envelopes a second).
    await new Promise((r) => setTimeout(r, 300))
    expect(relay.metrics.rejectedCount('stale epoch')).toBeLessThan(5)
    expect(aliceConv.membershipState.epoch).toBeGreaterThanOrEqual(1)
  })

  it.each([
    ['sealed again under it: the new member reads that too', false],
    ['shown failed where that key is gone, never pending for good', true],
  ])('is started again with a new key, and what was sealed under the refused one is %s', async (_, keyGone) => {
    world = new World()
    const relay = await world.relay()
    // Alice's uploads can be held back, as a slow network would; and the relay's stale-epoch
    // refusals to her, so they reach her after she started the epoch again.
    let holding = false
    let holdingStale = false
    const held: Array<() => void> = []
    const heldStale: Array<() => void> = []
    proxy = await FrameProxy.start(
      () => world.url,
      (to, data, send) => {
        if (to === 'relay') return holding ? held.push(send) : send()
        const frame = readFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
        const stale = frame.type === FrameType.Room && frame.message[0] === RoomMessage.Refused && frame.message[1] === Reason.StaleEpoch
        if (stale && holdingStale) heldStale.push(send)
        else send()
      },
    )
    const alice = await world.client('alice', { compaction: false, relay: proxy.url })
    const dave = await world.client('dave', { compaction: false })
    const aliceConv = await alice.createConversation({ title: 'Before Dave' })
    await aliceConv.send('said before dave came')
    await until(() => aliceConv.message(aliceConv.messages()[0]!.id)?.status !== 'pending', 10_000, 'stored')
    holding = true
    holdingStale = true
    const invite = await aliceConv.invite({ history: 'from-join' })
    // Sealed under the invite's new epoch, whose record the relay will refuse.
    const early = await aliceConv.send('sealed under the refused key')
    const daveConv = await dave.join(invite)
    holding = false
    for (const release of held.splice(0)) release()
    await until(() => relay.metrics.rejectedCount('record refused') >= 1 && heldStale.length >= 1, 10_000, 'the epoch and the message refused')
    // Alice started the epoch again, with another key for the same number; then the refusal of
    // her message reaches her. Opening it to seal it again needs the refused key.
    await until(() => aliceConv.membershipState.epoch >= 1 && daveConv.membershipState.epoch >= 1, 10_000, 'the epoch started again')
    if (keyGone) (aliceConv as unknown as { lostKeys: Map<string, Uint8Array> }).lostKeys.clear()
    holdingStale = false
    for (const release of heldStale.splice(0)) release()
    if (keyGone) {
      await until(() => aliceConv.message(early.id)?.status === 'failed', 10_000, 'failed')
      expect(aliceConv.message(early.id)?.error).toMatch(/could not be sealed again/)
      expect(world.errors.get(alice)!.some((e) => e.code === 'envelope_rejected' && /could not be sealed again/.test(e.message))).toBe(true)
      // And after a restart: failed still, not pending.
      await alice.close()
      const again = await world.client('alice', { compaction: false, relay: proxy.url })
      const [conv] = await again.conversations()
      await conv!.ready()
      expect(conv!.message(early.id)?.status).toBe('failed')
      return
    }
    await until(() => texts(daveConv).includes('sealed under the refused key'), 10_000, 'dave reads what was sealed again')
    await until(() => aliceConv.message(early.id)?.status !== 'pending', 10_000, 'stored')
    expect(texts(daveConv)).toEqual(['sealed under the refused key'])
    expect(world.errors.get(alice)!.filter((e) => e.code !== 'refused')).toEqual([])
  })
})

describe('a catch-up and a compaction of the same conversation', () => {
  it('reads rows in pages of catchUpPageRows, which must be a whole number of rows, at least 1', async () => {
    for (const catchUpPageRows of [0, -1, 1.5, Number.NaN]) {
      await expect(createRelay({ port: 0, database: ':memory:', catchUpPageRows })).rejects.toMatchObject({ code: 'invalid_argument' })
    }
  })

  it('never interleave: a device that joins while the relay compacts gets every clock, and shows the next message', async () => {
    world = new World()
    // The relay's own SQLite store, with a hold on one read and a hook after another.
    const real = openSqliteRelayStore(world.dbPath)
    let release!: () => void
    const held = new Promise<void>((resolve) => (release = resolve))
    let holdNextRead = false
    let readHeld = false
    let hook: { reads: number; run: () => Promise<void> } | undefined
    const store: RelayStore = {
      ...real,
      readRows: async (...args) => {
        if (holdNextRead) {
          holdNextRead = false
          readHeld = true
          await held
        }
        const rows = await real.readRows(...args)
        if (hook && --hook.reads === 0) {
          const { run } = hook
          hook = undefined
          await run()
        }
        return rows
      },
    }
    // Four rows a read: Carol's catch-up takes several.
    await world.relay({ database: store, catchUpPageRows: 4 })
    const alice = await world.client('alice', { compaction: false })
    const bob = await world.client('bob', { compaction: false })
    await until(() => alice.connection === 'online' && bob.connection === 'online', 10_000, 'both online')
    const aliceConv = await alice.createConversation({ title: 'Race' })
    const bobConv = await bob.join(await aliceConv.invite())
    // One at a time, each stored before the next: a row each, after the conversation's first
    // seven (its records, one or a few a row).
    for (let i = 0; i < 20; i++) {
      const m = await aliceConv.send(`m${i}`)
      await until(() => aliceConv.message(m.id)?.status !== 'pending', 10_000, `m${i} stored`)
    }
    await until(() => bobConv.messages().length === 20, 10_000, 'bob has all 20')
    // The next read is the compaction's look for rows with records, once Bob's snapshot is in:
    // it waits there.
    holdNextRead = true
    await snapshotOf(bobConv)()
    await until(() => readHeld, 10_000, 'the relay about to compact')
    // Carol's catch-up reads rows 1-4, then 5-8: the first of Alice's messages. Then the
    // compaction goes on while that read waits, and would make Alice's messages one GC row at
    // the first one's seq, which the catch-up has passed.
    hook = {
      reads: 2,
      run: async () => {
        release()
        await new Promise((resolve) => setTimeout(resolve, 300))
      },
    }
    const carol = await world.client('carol', { compaction: false })
    const carolConv = await carol.join(await aliceConv.invite())
    await until(() => carolConv.messages().length === 20, 10_000, 'carol shows the history')
    await until(() => compacted(world) > 0, 10_000, 'the relay compacted')
    expect(hook).toBeUndefined()
    // A gap in Alice's outer clocks would hold this one back at Carol's until she reconnects.
    await aliceConv.send('after')
    await until(() => carolConv.messages().some((m) => m.text === 'after'), 5_000, 'carol shows the next message')
    expect(texts(carolConv)).toEqual([...Array.from({ length: 20 }, (_, i) => `m${i}`), 'after'])
  })
})
