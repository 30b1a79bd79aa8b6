/**
 * The RelayStore contract for row compaction, the membership index and the link mailbox: part
 * of the conformance suite (registered by runRelayStoreConformance, so every backend runs it),
 * kept in its own file so neither grows past a readable size.
 */
import { describe, expect, it } from 'vitest'
import type { RelayStore, Row } from '../../src/relay/store/relay-store.js'
import { expectPetrelError } from './device-store.conformance.js'
import { batch, row, text } from './relay-store-rows.js'
import type { RelayStoreHarness } from './relay-store.conformance.js'

const bytes = (...xs: number[]): Uint8Array => new Uint8Array(xs)
const GENESIS = text('genesis')


/** A row as compaction writes it; the GC bytes are spelled out (golden), not computed. */
const gcRow = (room: string, seq: number, client: number, clock: number, len: number, structs: Uint8Array): Row => ({
  room,
  seq,
  client,
  clock,
  len,
  count: 1,
  structs,
})

/** Each client's rows, read in seq order, must tile its clocks from 0 without gap or overlap. */
function expectContiguousPerClient(rows: Row[]): void {
  expect(rows.map((r) => r.seq)).toEqual([...rows.map((r) => r.seq)].sort((a, b) => a - b))
  const next = new Map<number, number>()
  for (const r of rows) {
    expect(r.clock, `client ${r.client} at seq ${r.seq}`).toBe(next.get(r.client) ?? 0)
    next.set(r.client, r.clock + r.len)
  }
}

export function describeRelayStoreUpkeep(current: () => { store: RelayStore; harness: RelayStoreHarness }): void {
  describe('compactRows', () => {
    /**
     * Clients 7 and 8 interleaved; seq 5 (client 7, clock 3) is kept, seqs 9 and 10 lie after
     * throughSeq = 8. Client 7's rows through 8 form [0,3) (seqs 1, 3) | kept | [4,7) (seqs 7, 8);
     * client 8's form [0,4) (seqs 2, 4, 6).
     */
    const interleaved = async (store: RelayStore): Promise<void> => {
      await store.createRoom('A', GENESIS, 1)
      await store.append(
        batch({
          bindings: [
            { room: 'A', client: 7, device: 'dev-a' },
            { room: 'A', client: 8, device: 'dev-b' },
          ],
          rows: [
            row('A', 7, 0, 1),
            row('A', 8, 0, 2),
            row('A', 7, 1, 2),
            row('A', 8, 2, 1),
            row('A', 7, 3, 1),
            row('A', 8, 3, 1),
            row('A', 7, 4, 1),
            row('A', 7, 5, 2),
            row('A', 8, 4, 1),
            row('A', 7, 7, 1),
          ],
        }),
      )
    }

    it('replaces each client run by one GC row at the run’s smallest seq, around kept rows and before throughSeq only', async () => {
      const { store, harness } = current()
      await interleaved(store)
      const before = { snap: await store.loadRoom('A'), bytes: await store.roomBytes('A') }

      expect(await store.compactRows('A', 8, new Set([5]))).toEqual({ removed: 7, written: 3 })

      const expected = [
        gcRow('A', 1, 7, 0, 3, bytes(0, 3)),
        gcRow('A', 2, 8, 0, 4, bytes(0, 4)),
        { ...row('A', 7, 3, 1), seq: 5 },
        gcRow('A', 7, 7, 4, 3, bytes(0, 3)),
        { ...row('A', 8, 4, 1), seq: 9 },
        { ...row('A', 7, 7, 1), seq: 10 },
      ]
      const rows = await store.readRows('A', 0, 100)
      expect(rows).toEqual(expected)
      expectContiguousPerClient(rows)
      expect(await store.loadRoom('A')).toEqual(before.snap)
      expect(await store.roomBytes('A')).toBeLessThan(before.bytes)
      // The clock lookups see the GC rows as the rows covering those clocks.
      expect(await store.firstRowEndingAfter('A', 7, 2)).toBe(1)
      expect(await store.firstRowEndingAfter('A', 7, 3)).toBe(5)
      expect(await store.rowsCovering('A', 8, 1, 5)).toEqual([
        { seq: 2, clock: 0, len: 4 },
        { seq: 9, clock: 4, len: 1 },
      ])
      expect(await store.rowsOfClientsAfter('A', [7], 0, 10)).toEqual([
        { seq: 1, client: 7, clock: 0, len: 3 },
        { seq: 5, client: 7, clock: 3, len: 1 },
        { seq: 7, client: 7, clock: 4, len: 3 },
        { seq: 10, client: 7, clock: 7, len: 1 },
      ])
      expect(await (await harness.reopen()).readRows('A', 0, 100)).toEqual(expected)
    })

    it('continues numbering and clocks after compaction, and compacting again merges GC rows with later rows', async () => {
      const { store } = current()
      await store.createRoom('A', GENESIS, 1)
      await store.append(batch({ bindings: [{ room: 'A', client: 7, device: 'dev-a' }], rows: [row('A', 7, 0, 60), row('A', 7, 60, 40)] }))
      expect(await store.compactRows('A', 2, new Set())).toEqual({ removed: 2, written: 1 })
      expect(await store.readRows('A', 0, 10)).toEqual([gcRow('A', 1, 7, 0, 100, bytes(0, 100))])
      expect((await store.loadRoom('A'))!.clients.get(7)).toEqual({ device: 'dev-a', next: 100 })

      expect(await store.append(batch({ rows: [row('A', 7, 100, 200)] }))).toEqual([3])
      const snap = (await store.loadRoom('A'))!
      expect(snap.maxSeq).toBe(3)
      expect(snap.clients.get(7)).toEqual({ device: 'dev-a', next: 300 })

      // The GC row is a row like any other: it merges with the next one; 300 is a two-byte varUint.
      expect(await store.compactRows('A', 3, new Set())).toEqual({ removed: 2, written: 1 })
      expect(await store.readRows('A', 0, 10)).toEqual([gcRow('A', 1, 7, 0, 300, bytes(0, 0xac, 0x02))])
      expect(await store.loadRoom('A')).toEqual(snap)
      expect(await store.append(batch({ rows: [row('A', 7, 300, 1)] }))).toEqual([4])
    })

    it('rewrites a lone row that is not yet its GC struct, and leaves one that is (a repeat is a no-op)', async () => {
      const { store } = current()
      await store.createRoom('A', GENESIS, 1)
      // count 1 but not a GC struct (an Item, say): it must still become one.
      await store.append(batch({ rows: [{ ...row('A', 7, 0, 1), structs: bytes(8, 1, 2) }, row('A', 8, 0, 2)] }))
      expect(await store.compactRows('A', 2, new Set())).toEqual({ removed: 2, written: 2 })
      const compacted = await store.readRows('A', 0, 10)
      expect(compacted).toEqual([gcRow('A', 1, 7, 0, 1, bytes(0, 1)), gcRow('A', 2, 8, 0, 2, bytes(0, 2))])
      expect(await store.compactRows('A', 2, new Set())).toEqual({ removed: 0, written: 0 })
      expect(await store.readRows('A', 0, 10)).toEqual(compacted)
    })

    it('changes nothing when every row is kept, none is old enough, or the room is unknown', async () => {
      const { store } = current()
      await interleaved(store)
      const rows = await store.readRows('A', 0, 100)
      expect(await store.compactRows('A', 10, new Set(rows.map((r) => r.seq)))).toEqual({ removed: 0, written: 0 })
      expect(await store.compactRows('A', 0, new Set())).toEqual({ removed: 0, written: 0 })
      expect(await store.compactRows('nowhere', 10, new Set())).toEqual({ removed: 0, written: 0 })
      expect(await store.readRows('A', 0, 100)).toEqual(rows)
    })

    it('merges in clock order, not seq order, and never across a clock gap', async () => {
      const { store } = current()
      await store.createRoom('A', GENESIS, 1)
      // Seq order differs from clock order for client 7; runs follow clocks.
      await store.append(batch({ rows: [row('A', 7, 2, 2), row('A', 7, 0, 2), row('A', 7, 5, 1), row('A', 7, 6, 1)] }))
      expect(await store.compactRows('A', 4, new Set())).toEqual({ removed: 4, written: 2 })
      expect(await store.readRows('A', 0, 10)).toEqual([gcRow('A', 1, 7, 0, 4, bytes(0, 4)), gcRow('A', 3, 7, 5, 2, bytes(0, 2))])
    })
  })

  describe('membership index', () => {
    const member = (room: string, device: string, isMember = true) => ({ room, device, member: isMember })

    it('lists the rooms of a device in code point order, through batches of devices only or with rows', async () => {
      const { store, harness } = current()
      for (const room of ['room-b', 'Room-c', 'room-a']) await store.createRoom(room, GENESIS, 1)
      expect(await store.append(batch({ devices: [member('room-b', 'dev-a'), member('Room-c', 'dev-a')] }))).toEqual([])
      await store.append(
        batch({
          rows: [row('room-a', 7, 0, 1)],
          records: [{ room: 'room-a', bytes: text('join') }],
          devices: [member('room-a', 'dev-a'), member('room-a', 'dev-b'), member('room-b', 'dev-a')],
        }),
      )
      expect(await store.roomsOfDevice('dev-a')).toEqual(['Room-c', 'room-a', 'room-b'])
      expect(await store.roomsOfDevice('dev-b')).toEqual(['room-a'])
      expect(await store.roomsOfDevice('dev-nobody')).toEqual([])
      expect(await (await harness.reopen()).roomsOfDevice('dev-a')).toEqual(['Room-c', 'room-a', 'room-b'])
    })

    it('removes a device from one room only; removing a non-member is a no-op', async () => {
      const { store } = current()
      for (const room of ['A', 'B']) await store.createRoom(room, GENESIS, 1)
      await store.append(batch({ devices: [member('A', 'dev-a'), member('B', 'dev-a'), member('A', 'dev-b')] }))
      await store.append(batch({ devices: [member('A', 'dev-a', false), member('B', 'dev-b', false)] }))
      expect(await store.roomsOfDevice('dev-a')).toEqual(['B'])
      expect(await store.roomsOfDevice('dev-b')).toEqual(['A'])
    })

    it('applies several changes of one (room, device) in one batch in order', async () => {
      const { store } = current()
      for (const room of ['A', 'B']) await store.createRoom(room, GENESIS, 1)
      await store.append(batch({ devices: [member('B', 'dev-a')] }))
      await store.append(batch({ devices: [member('A', 'dev-a'), member('A', 'dev-a', false), member('B', 'dev-a', false), member('B', 'dev-a')] }))
      expect(await store.roomsOfDevice('dev-a')).toEqual(['B'])
    })

    it('applies membership changes atomically with the rest of the batch', async () => {
      const { store } = current()
      await store.createRoom('A', GENESIS, 1)
      await store.append(batch({ devices: [member('A', 'dev-a')] }))
      await expectPetrelError(
        store.append(batch({ rows: [row('nowhere', 7, 0, 1)], devices: [member('A', 'dev-a', false), member('A', 'dev-b')] })),
        'storage_failed',
      )
      expect(await store.roomsOfDevice('dev-a')).toEqual(['A'])
      expect(await store.roomsOfDevice('dev-b')).toEqual([])
    })
  })

  describe('link mailbox', () => {
    const ID = 'AAAAAAAAAAAAAAAAAAAAAA'
    const OTHER = 'BBBBBBBBBBBBBBBBBBBBBB'

    it('takes exactly the bytes put, once', async () => {
      const { store } = current()
      const all = new Uint8Array(256).map((_, i) => i)
      expect(await store.putLink(ID, 0, all, 2000)).toBe(true)
      const taken = await store.takeLink(ID, 0, 1000)
      expect(taken).toEqual(all)
      expect(taken).toBeInstanceOf(Uint8Array)
      expect(await store.takeLink(ID, 0, 1000)).toBeUndefined()
      expect(await store.takeLink('never-put-here-000000', 1, 1000)).toBeUndefined()
    })

    it('reads a message and leaves it, until it expires (at expiresAt) or is taken', async () => {
      const { store } = current()
      const all = new Uint8Array(256).map((_, i) => 255 - i)
      expect(await store.readLink(ID, 1, 1000)).toBeUndefined()
      expect(await store.putLink(ID, 1, all, 2000)).toBe(true)
      const read = await store.readLink(ID, 1, 1000)
      expect(read).toEqual(all)
      expect(read).toBeInstanceOf(Uint8Array)
      expect(await store.readLink(ID, 1, 1999)).toEqual(all)
      expect(await store.readLink(ID, 0, 1000)).toBeUndefined()
      expect(await store.readLink(OTHER, 1, 1000)).toBeUndefined()
      expect(await store.readLink(ID, 1, 2000)).toBeUndefined()
      expect(await store.takeLink(ID, 1, 1000)).toEqual(all)
      expect(await store.readLink(ID, 1, 1000)).toBeUndefined()
    })

    it('keeps slots and mailboxes apart', async () => {
      const { store } = current()
      expect(await store.putLink(ID, 0, text('a0'), 2000)).toBe(true)
      expect(await store.putLink(ID, 1, text('a1'), 2000)).toBe(true)
      expect(await store.putLink(OTHER, 0, text('b0'), 2000)).toBe(true)
      expect(await store.takeLink(ID, 1, 1000)).toEqual(text('a1'))
      expect(await store.takeLink(OTHER, 1, 1000)).toBeUndefined()
      expect(await store.takeLink(OTHER, 0, 1000)).toEqual(text('b0'))
      expect(await store.takeLink(ID, 0, 1000)).toEqual(text('a0'))
    })

    it('lets the first writer of a slot win until the message is taken', async () => {
      const { store, harness } = current()
      expect(await store.putLink(ID, 0, text('first'), 2000)).toBe(true)
      expect(await store.putLink(ID, 0, text('second'), 9000)).toBe(false)
      expect(await (await harness.reopen()).putLink(ID, 0, text('third'), 9000)).toBe(false)
      expect(await store.takeLink(ID, 0, 1000)).toEqual(text('first'))
      expect(await store.putLink(ID, 0, text('fourth'), 2000)).toBe(true)
      expect(await store.takeLink(ID, 0, 1000)).toEqual(text('fourth'))
    })

    it('gives one of two concurrent writers the slot and one of two concurrent takers the message', async () => {
      const { store } = current()
      const puts = await Promise.all([store.putLink(ID, 1, text('x'), 2000), store.putLink(ID, 1, text('y'), 2000)])
      expect(puts.filter(Boolean)).toHaveLength(1)
      const takes = await Promise.all([store.takeLink(ID, 1, 1000), store.takeLink(ID, 1, 1000)])
      expect(takes.filter((t) => t !== undefined)).toEqual([text(puts[0] ? 'x' : 'y')])
    })

    it('returns nothing for an expired message (expired at expiresAt), deleting it so the slot is free', async () => {
      const { store } = current()
      await store.putLink(ID, 0, text('late'), 1000)
      await store.putLink(OTHER, 0, text('just in time'), 1000)
      expect(await store.takeLink(OTHER, 0, 999)).toEqual(text('just in time'))
      // Until taken or purged, an expired message still holds its slot.
      expect(await store.putLink(ID, 0, text('again'), 5000)).toBe(false)
      expect(await store.takeLink(ID, 0, 1000)).toBeUndefined()
      expect(await store.putLink(ID, 0, text('again'), 5000)).toBe(true)
      expect(await store.takeLink(ID, 0, 4999)).toEqual(text('again'))
    })

    it('purges expired messages only, counting them', async () => {
      const { store } = current()
      await store.putLink(ID, 0, text('a'), 100)
      await store.putLink(ID, 1, text('b'), 200)
      await store.putLink(OTHER, 0, text('c'), 300)
      expect(await store.purgeLinks(200)).toBe(2)
      expect(await store.purgeLinks(200)).toBe(0)
      expect(await store.putLink(ID, 0, text('a2'), 1000)).toBe(true)
      expect(await store.takeLink(OTHER, 0, 250)).toEqual(text('c'))
      expect(await store.takeLink(ID, 0, 250)).toEqual(text('a2'))
    })

    it('refuses a slot other than 0 or 1', async () => {
      const { store } = current()
      for (const slot of [2, -1, 0.5]) {
        await expectPetrelError(store.putLink(ID, slot, text('x'), 2000), 'invalid_argument')
        await expectPetrelError(store.takeLink(ID, slot, 1000), 'invalid_argument')
      }
    })
  })

  it('rejects the new operations with closed after close', async () => {
    const { store } = current()
    await store.close()
    await expectPetrelError(store.compactRows('A', 1, new Set()), 'closed')
    await expectPetrelError(store.roomsOfDevice('dev-a'), 'closed')
    await expectPetrelError(store.putLink('AAAAAAAAAAAAAAAAAAAAAA', 0, text('x'), 1), 'closed')
    await expectPetrelError(store.takeLink('AAAAAAAAAAAAAAAAAAAAAA', 0, 1), 'closed')
    await expectPetrelError(store.purgeLinks(1), 'closed')
  })
}
