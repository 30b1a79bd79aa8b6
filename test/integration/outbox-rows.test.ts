/**
 * The outbox's rows on the device: one per envelope (the messages it carries share their
 * state), read back at start with every tick and failure, and the one-row-per-message form of
 * earlier versions still read and replaced as its messages move on.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { decodeSentEnvelope, encodeOwn, encodeSentEnvelope, keyOf } from '../../src/client/conversation-record.js'
import { openSqliteStore } from '../../src/client/storage/sqlite-store.js'
import { ErrorCode, PetrelError } from '../../src/shared/errors.js'
import { atLeastSent, onDisk, pair, texts, until, World } from './harness.js'

let world: World
afterEach(async () => {
  await world?.close()
})

const OFFLINE = { relay: 'ws://127.0.0.1:9' }

async function storedOutbox(world: World, name: string, convId: string) {
  const store = await openSqliteStore(`${world.dir}/${name}.db`)
  try {
    const sent = (await store.list(keyOf.sentPrefix(convId))).map(([key, value]) => ({ key, row: decodeSentEnvelope(value) }))
    const own = await store.list(keyOf.ownPrefix(convId))
    return { sent, own }
  } finally {
    await store.close()
  }
}

describe('outbox rows', () => {
  it('keep one row per envelope, and every tick, failure and discard survives a restart', async () => {
    world = new World()
    const relay = await world.relay()
    const { alice, aliceConv, bobConv } = await pair(world)
    await relay.close()
    // Offline: one envelope too large for the restarted relay, then three sent together.
    const big = await aliceConv.send('x'.repeat(8000))
    const small = await Promise.all(['one', 'two', 'three'].map((t) => aliceConv.send(t)))
    await world.relay({ limits: { maxEnvelopeBytes: 4096 } })
    await until(() => aliceConv.message(big.id)?.status === 'failed', 10_000, 'big fails')
    await until(() => small.every((m) => atLeastSent(aliceConv.message(m.id)?.status)), 10_000, 'small ones sent')
    await until(() => texts(bobConv).length === 3, 10_000, 'bob has them')
    await alice.close()

    const { sent, own } = await storedOutbox(world, 'alice', aliceConv.id)
    expect(own).toEqual([])
    expect(sent.map((s) => s.row.msgIds)).toEqual([[big.id], small.map((m) => m.id)])
    expect(sent[0]!.row).toMatchObject({ seq: 0, failure: expect.stringMatching(/too large/), refused: true })
    expect(sent[1]!.row.seq).toBeGreaterThan(0)
    expect(sent[1]!.row.failure).toBe('')

    const again = await world.client('alice', OFFLINE)
    const [conv] = await again.conversations()
    expect(conv!.message(big.id)).toMatchObject({ status: 'failed', error: expect.stringMatching(/too large/) })
    for (const m of small) expect(atLeastSent(conv!.message(m.id)?.status)).toBe(true)
    await conv!.discard(big.id)
    await again.close()
    expect((await storedOutbox(world, 'alice', aliceConv.id)).sent.map((s) => s.row.msgIds)).toEqual([small.map((m) => m.id)])
    const third = await world.client('alice', OFFLINE)
    const [conv3] = await third.conversations()
    expect(texts(conv3!)).toEqual(['one', 'two', 'three'])
    expect(conv3!.message(big.id)).toBeUndefined()
  })

  it('reads the one-row-per-message outbox of earlier versions and turns it into rows per envelope at the next start', async () => {
    world = new World()
    const relay = await world.relay()
    const { alice, aliceConv, bobConv } = await pair(world)
    await relay.close()
    const pending = await Promise.all(['a', 'b', 'c'].map((t) => aliceConv.send(t)))
    await alice.close()

    // Rewrite the outbox as a version before this one stored it: a row per message.
    const store = await openSqliteStore(`${world.dir}/alice.db`)
    const rows = await store.list(keyOf.sentPrefix(aliceConv.id))
    expect(rows).toHaveLength(1)
    const row = decodeSentEnvelope(rows[0]![1])
    await store.commit({
      put: [
        [rows[0]![0], null],
        ...row.msgIds.map((id): [string, Uint8Array] => [keyOf.own(aliceConv.id, id), encodeOwn({ envelopeKey: row.envelopeKey, seq: 0, failure: '' })]),
      ],
    })
    await store.close()

    // Read back: still waiting for the relay (a message with no outbox state would show ✓),
    // and the old rows became one row for their envelope at that start.
    const offline = await world.client('alice', OFFLINE)
    const [waiting] = await offline.conversations()
    for (const m of pending) expect(waiting!.message(m.id)?.status).toBe('pending')
    await offline.close()
    const migrated = await storedOutbox(world, 'alice', aliceConv.id)
    expect(migrated.own).toEqual([])
    expect(migrated.sent.map((s) => s.row)).toEqual([{ envelopeKey: row.envelopeKey, seq: 0, failure: '', refused: false, msgIds: pending.map((m) => m.id) }])

    await world.relay()
    const online = await world.client('alice')
    const [conv] = await online.conversations()
    await until(() => pending.every((m) => atLeastSent(conv!.message(m.id)?.status)), 10_000, 'acknowledged')
    await until(() => texts(bobConv).length === 3, 10_000, 'bob has them')
    await online.close()
    const { sent, own } = await storedOutbox(world, 'alice', aliceConv.id)
    expect(own).toEqual([])
    expect(sent.map((s) => s.row.msgIds)).toEqual([pending.map((m) => m.id)])
    expect(sent[0]!.row.seq).toBeGreaterThan(0)
  })

  it('opens with the old rows when the disk refuses to turn them into new ones, and turns them at a later start', async () => {
    world = new World()
    const relay = await world.relay()
    const { alice, aliceConv } = await pair(world)
    await relay.close()
    const pending = await Promise.all(['x', 'y'].map((t) => aliceConv.send(t)))
    await alice.close()
    const path = `${world.dir}/alice.db`
    const store = await openSqliteStore(path)
    const [[key, value]] = (await store.list(keyOf.sentPrefix(aliceConv.id))) as [[string, Uint8Array]]
    const row = decodeSentEnvelope(value)
    await store.commit({
      put: [[key, null], ...row.msgIds.map((id): [string, Uint8Array] => [keyOf.own(aliceConv.id, id), encodeOwn({ envelopeKey: row.envelopeKey, seq: 0, failure: '' })])],
    })
    await store.close()

    // A disk that is full for writes touching the outbox (the outside world).
    const disk = await openSqliteStore(path)
    const full = onDisk(disk, (batch, options) => {
      if (batch.put?.some(([k]) => k.startsWith('own:') || k.startsWith('sent:'))) return Promise.reject(new PetrelError(ErrorCode.StorageFailed, 'SQLite commit failed (SQLITE_FULL): database or disk is full'))
      return disk.commit(batch, options)
    })
    const cramped = await world.client('alice', { ...OFFLINE, storage: full })
    const [conv] = await cramped.conversations()
    for (const m of pending) expect(conv!.message(m.id)?.status).toBe('pending')
    await cramped.close()
    expect((await storedOutbox(world, 'alice', aliceConv.id)).own).toHaveLength(2)

    const roomy = await world.client('alice', OFFLINE)
    const [again] = await roomy.conversations()
    for (const m of pending) expect(again!.message(m.id)?.status).toBe('pending')
    await roomy.close()
    const { own, sent } = await storedOutbox(world, 'alice', aliceConv.id)
    expect(own).toEqual([])
    expect(sent.map((s) => s.row.msgIds)).toEqual([pending.map((m) => m.id)])
  })

  it('clears a failure once the relay acknowledges the envelope after all (a denial that passed)', async () => {
    world = new World()
    const relay = await world.relay()
    const { alice, aliceConv, bobConv } = await pair(world)
    await relay.close()
    const m = await aliceConv.send('denied, then delivered')
    await alice.close()
    // As a denial leaves it: failed, not refused (no tombstone went out), still in the outer log.
    const store = await openSqliteStore(`${world.dir}/alice.db`)
    const rows = await store.list(keyOf.sentPrefix(aliceConv.id))
    expect(rows).toHaveLength(1)
    const [key, value] = rows[0]!
    const row = decodeSentEnvelope(value)
    await store.commit({ put: [[key, encodeSentEnvelope({ ...row, failure: 'forbidden: not a member (for a while)' })]] })
    await store.close()

    await world.relay()
    const again = await world.client('alice')
    const [conv] = await again.conversations()
    await until(() => texts(bobConv).includes('denied, then delivered'), 10_000, 'bob has it')
    await until(() => atLeastSent(conv!.message(m.id)?.status), 10_000, 'shown as sent, not failed')
    expect(conv!.message(m.id)?.error).toBeUndefined()
    await again.close()
    const { sent } = await storedOutbox(world, 'alice', aliceConv.id)
    expect(sent.map((s) => s.row)).toEqual([expect.objectContaining({ msgIds: [m.id], failure: '', refused: false })])
    expect(sent[0]!.row.seq).toBeGreaterThan(0)
  })

  it('takes the most advanced state for a message two rows name (a rewrite issued late), and drops the stale row at start', async () => {
    world = new World()
    const relay = await world.relay()
    const { alice, aliceConv } = await pair(world)
    const m = await aliceConv.send('twice listed')
    await until(() => atLeastSent(aliceConv.message(m.id)?.status), 10_000, 'sent')
    await alice.close()
    await relay.close()
    const store = await openSqliteStore(`${world.dir}/alice.db`)
    // A stale row of an envelope it left, refused, sorting after the one it is in now.
    const stale = encodeSentEnvelope({ envelopeKey: 'zzzz.0', seq: 0, failure: 'too large: stale', msgIds: [m.id] })
    await store.commit({ put: [[keyOf.sent(aliceConv.id, `${m.id}~`, 'zzzz.0'), stale]] })
    await store.close()
    const again = await world.client('alice', OFFLINE)
    const [conv] = await again.conversations()
    expect(atLeastSent(conv!.message(m.id)?.status)).toBe(true)
    await again.close()
    const { sent } = await storedOutbox(world, 'alice', aliceConv.id)
    expect(sent.filter((s) => s.row.msgIds.includes(m.id)).map((s) => s.row.envelopeKey)).not.toContain('zzzz.0')
    expect(sent.some((s) => s.row.envelopeKey === 'zzzz.0')).toBe(false)
  })
})
